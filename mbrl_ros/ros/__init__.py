"""Plumbing shared by the nodes: parameter specs, diagnostics, message conversion, node main."""
