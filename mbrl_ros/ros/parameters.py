"""One declarative parameter spec per node: declares the ROS parameters (with descriptors,
ranges, read_only) and validates live changes, so a parameter's range lives in one place.

Dynamic parameters take effect at the node's next cycle; a live change to a static one is
refused with a reason, as nav2's parameter handler does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.parameter import Parameter

Validator = Callable[[Any], Optional[str]]  # returns a reason to refuse, or None


class ParameterError(ValueError):
    """A parameter value given at start-up that the node cannot run with."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    range: Optional[tuple[float, float]] = None  # inclusive, for int and float
    choices: Optional[Sequence[str]] = None
    dynamic: bool = True
    validator: Optional[Validator] = None
    # Set when default is None: the ROS type the parameter takes (e.g. 'string_array').
    type_hint: Optional[str] = None

    def ros_type(self) -> Parameter.Type:
        if self.type_hint is not None:
            return {
                'string': Parameter.Type.STRING, 'double': Parameter.Type.DOUBLE,
                'integer': Parameter.Type.INTEGER, 'bool': Parameter.Type.BOOL,
                'string_array': Parameter.Type.STRING_ARRAY,
                'double_array': Parameter.Type.DOUBLE_ARRAY,
            }[self.type_hint]
        return Parameter.Type.from_parameter_value(self.default)

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description,
                                read_only=not self.dynamic, type=int(self.ros_type()))
        if self.range is not None:
            lo, hi = self.range
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                             to_value=float(hi), step=0.0)]
        if self.choices:
            d.additional_constraints = 'one of: ' + ', '.join(self.choices)
        return d

    def check(self, value: Any) -> Optional[str]:
        """Why `value` is not acceptable for this parameter, or None when it is."""
        want = self.ros_type()
        if isinstance(value, int) and not isinstance(value, bool) and want == Parameter.Type.DOUBLE:
            value = float(value)
        try:
            got = Parameter.Type.from_parameter_value(value)
        except TypeError:
            return f"'{self.name}' has an unsupported type {type(value).__name__}"
        if got != want:
            return f"'{self.name}' must be {want.name.lower()}, got {got.name.lower()}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"'{self.name}' must be finite, got {value}"
        if self.range is not None and not isinstance(value, (bool, str, list, tuple)):
            lo, hi = self.range
            if not lo <= value <= hi:
                return f"'{self.name}' = {value} is out of range [{lo}, {hi}]"
        if self.choices and value not in self.choices:
            return f"'{self.name}' = {value!r} is not one of {list(self.choices)}"
        if self.validator is not None:
            reason = self.validator(value)
            if reason:
                return f"'{self.name}': {reason}"
        return None


@dataclass
class ParameterHandler:
    """Declares `specs` on `node`, keeps their current values, and validates changes.

    `on_validate(changes)` may refuse a batch of changes with a reason (cross-parameter checks
    or expensive checks such as loading a model); `on_applied(changes)` runs after a batch was
    accepted and set.
    """
    node: Any
    specs: Iterable[Param]
    on_validate: Optional[Callable[[dict], Optional[str]]] = None
    on_applied: Optional[Callable[[dict], None]] = None
    values: dict = field(default_factory=dict)

    def __post_init__(self):
        self.specs = {s.name: s for s in self.specs}
        for spec in self.specs.values():
            default = spec.default if spec.default is not None else spec.ros_type()
            try:
                p = self.node.declare_parameter(spec.name, default, spec.descriptor())
            except Exception as exc:  # rclpy raises on an override outside the descriptor
                raise ParameterError(f"parameter '{spec.name}': {exc}") from exc
            value = _plain(p.value)
            reason = spec.check(value) if value is not None else None
            if reason:
                raise ParameterError(reason)
            self.values[spec.name] = value
        self.node.add_on_set_parameters_callback(self._on_set)
        self.node.add_post_set_parameters_callback(self._on_post_set)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def _on_set(self, params: list[Parameter]) -> SetParametersResult:
        changes = {}
        for p in params:
            spec = self.specs.get(p.name)
            if spec is None:
                continue  # e.g. use_sim_time: rclpy owns it
            if not spec.dynamic:
                return SetParametersResult(
                    successful=False,
                    reason=f"Rejected change to static parameter '{p.name}' (restart the node)")
            value = _plain(p.value)
            reason = spec.check(value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            changes[p.name] = value
        if changes and self.on_validate is not None:
            reason = self.on_validate(changes)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _on_post_set(self, params: list[Parameter]) -> None:
        changes = {p.name: _plain(p.value) for p in params if p.name in self.specs}
        if not changes:
            return
        self.values.update(changes)
        self.node.get_logger().info(
            'parameters changed: ' + ', '.join(f'{k}={v!r}' for k, v in changes.items()))
        if self.on_applied is not None:
            self.on_applied(changes)


def _plain(value: Any) -> Any:
    """rclpy hands arrays back as array.array or numpy; keep plain lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return list(value)
