"""Additional inputs without a UI framework.

A ``Stream``'s ``additional_inputs`` describe the extra arguments its handler
takes: their kind, label and default ``value``. The built-in page renders them
from :meth:`InputSpec.to_dict`, and a handler gets the defaults until the client
sends its own values with ``set_input``.

Gradio components are accepted too (anything with a ``.value``; gradio is never
imported): :func:`as_input` turns them into the matching spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Iterable, Sequence

from flowrtc.errors import ConfigurationError

__all__ = ["InputSpec", "Value", "Slider", "Number", "Textbox", "Text", "Checkbox", "Dropdown", "as_input", "input_values"]


class InputSpec:
    """One extra argument of a handler: a kind the page knows how to render, and its default.

    Every spec has ``value`` (the default, passed to the handler until the client
    sets its own) and ``label`` (what the page shows next to the control).
    """

    kind: ClassVar[str] = "value"
    value: Any
    label: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description for the built-in page: ``{"type": kind, "value": ..., ...}``."""
        return {"type": self.kind, **asdict(self)}  # type: ignore[call-overload]


@dataclass
class Value(InputSpec):
    """An input of a kind the page does not render (e.g. Gradio's ``State``): just its value."""

    value: Any = None
    label: str | None = None


@dataclass
class Slider(InputSpec):
    """A number picked on a range (Gradio's ``Slider``); the default is ``minimum`` unless ``value`` is given.

    Attributes:
        minimum, maximum: the range.
        step: the increment (``None``: any value).
    """

    kind: ClassVar[str] = "slider"
    minimum: float = 0
    maximum: float = 100
    value: float | None = None
    step: float | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.maximum < self.minimum:
            raise ConfigurationError(f"Slider maximum {self.maximum} is below its minimum {self.minimum}")
        if self.value is None:
            self.value = self.minimum


@dataclass
class Number(InputSpec):
    """A number typed in (Gradio's ``Number``); default ``0``."""

    kind: ClassVar[str] = "number"
    value: float = 0
    label: str | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass
class Textbox(InputSpec):
    """Free text (Gradio's ``Textbox``); default ``""``."""

    kind: ClassVar[str] = "textbox"
    value: str = ""
    label: str | None = None
    placeholder: str | None = None
    lines: int = 1


#: Gradio's short name for :class:`Textbox`.
Text = Textbox


@dataclass
class Checkbox(InputSpec):
    """A yes/no choice (Gradio's ``Checkbox``); default ``False``."""

    kind: ClassVar[str] = "checkbox"
    value: bool = False
    label: str | None = None


@dataclass
class Dropdown(InputSpec):
    """One of several choices (Gradio's ``Dropdown``); the default is the first choice unless ``value`` is given.

    Attributes:
        choices: the values to pick from (``(label, value)`` pairs show the label).
    """

    kind: ClassVar[str] = "dropdown"
    choices: Sequence[Any] = field(default_factory=list)
    value: Any = None
    label: str | None = None

    def __post_init__(self) -> None:
        self.choices = list(self.choices)
        if self.value is None and self.choices:
            first = self.choices[0]
            self.value = first[1] if isinstance(first, (tuple, list)) and len(first) == 2 else first


_BY_CLASS_NAME: dict[str, type[InputSpec]] = {
    "Slider": Slider,
    "Number": Number,
    "Textbox": Textbox,
    "Text": Textbox,
    "TextArea": Textbox,
    "Checkbox": Checkbox,
    "Dropdown": Dropdown,
    "Radio": Dropdown,
}


def as_input(component: Any) -> InputSpec:
    """The :class:`InputSpec` for a spec or a Gradio-like component (anything with ``.value``).

    A component's kind is read from its class name (``Slider``, ``Number``,
    ``Textbox``, ``Checkbox``, ``Dropdown``, ...); other kinds keep just their value.
    A callable ``value`` (Gradio allows one) is called once for the default.
    """
    if isinstance(component, InputSpec):
        return component
    if not hasattr(component, "value"):
        raise ConfigurationError(
            f"additional inputs must be flowrtc.inputs specs or objects with a .value, got {type(component).__name__}"
        )
    value = component.value
    if callable(value):
        value = value()
    label = getattr(component, "label", None)
    spec_type = _BY_CLASS_NAME.get(type(component).__name__, Value)
    options: dict[str, Any] = {"value": value, "label": label if isinstance(label, str) else None}
    if spec_type is Slider:
        options.update(minimum=getattr(component, "minimum", 0), maximum=getattr(component, "maximum", 100), step=getattr(component, "step", None))
    elif spec_type is Dropdown:
        options["choices"] = list(getattr(component, "choices", None) or [])
    elif spec_type is Number:
        options.update(minimum=getattr(component, "minimum", None), maximum=getattr(component, "maximum", None))
        if options["value"] is None:
            options["value"] = 0
    elif spec_type in (Textbox, Checkbox) and options["value"] is None:
        options["value"] = "" if spec_type is Textbox else False
    return spec_type(**options)


def input_values(inputs: Iterable[Any]) -> list[Any]:
    """The default values of some additional inputs, in order."""
    return [as_input(spec).value for spec in inputs]
