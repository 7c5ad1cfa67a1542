"""One module per `mbrl-ros` sub-command: `add_arguments(parser)` and `run(args) -> int`."""
