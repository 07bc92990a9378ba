"""The widgets a ComfyUI node shows, from its definition in `/object_info`,
and how a UI-format file's `widgets_values` land on them.

ComfyUI's web page builds one widget per input whose type it draws (INT,
FLOAT, STRING, BOOLEAN, a choice list, ...), in the definition's input order
(`input_order` when the server sends it), and adds widgets of its own: a
`control_after_generate` choice after a seed, an "upload" button after an
image or audio file choice, an audio player. A saved file lists the values of
every widget it keeps (`widgets_values`), page-only ones included, so the
values are matched to widgets by position and the page-only ones are skipped
when the graph is sent. Pure stdlib; no I/O.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Input types the web page draws as a widget (the rest are link sockets).
WIDGET_TYPES = frozenset({
    "INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN", "COMBO", "IMAGEUPLOAD", "FILEUPLOAD",
    "COLOR", "IMAGECOMPARE", "TREESELECT", "MULTISELECT", "CHART", "GALLERIA", "SELECTBUTTON",
    "TEXTAREA", "WEBCAM", "AUDIO_UI", "AUDIOUPLOAD", "AUDIO_RECORD", "PREVIEW_3D",
    "PREVIEW_3D_ANIMATION", "LOAD_3D", "LOAD_3D_ANIMATION",
})
_MEDIA_UPLOAD = ("image_upload", "video_upload", "animated_image_upload")
_AUDIO_PLAYERS = frozenset({"LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3",
                            "SaveAudioOpus"})
_MESH_PREVIEWS = {"Preview3D": "PREVIEW_3D", "SaveGLB": "PREVIEW_3D",
                  "Preview3DAnimation": "PREVIEW_3D_ANIMATION"}
_CONTROL_VALUES = {True: "randomize", False: "fixed"}


@dataclass
class Widget:
    """One widget: `stored` when the saved file keeps its value (it takes a
    place in `widgets_values`), `sent` when its value goes into the API graph."""

    name: str
    value: Any
    stored: bool = True
    sent: bool = True
    dynamic_prompt: bool = False
    folder: str = "input"  # where an upload combo's files live
    fixed: bool = False  # a button: takes a place in widgets_values, keeps its own value


def input_specs(node_def: Mapping[str, Any]) -> list[tuple[str, Any, bool]]:
    """(name, spec, optional) of each input, in the order the page lays them out:
    `input_order` first (required, then optional), then any input it does not name
    (the page's own additions come last this way)."""
    declared = node_def.get("input") or {}
    required = dict(declared.get("required") or {})
    optional = dict(declared.get("optional") or {})
    _add_page_inputs(node_def.get("name", ""), required)
    order = node_def.get("input_order") or {}
    specs: dict[str, tuple[str, Any, bool]] = {}
    if order:
        for name in order.get("required") or []:
            if name in required:
                specs[name] = (name, required[name], False)
        for name in order.get("optional") or []:
            if name in optional and name not in specs:
                specs[name] = (name, optional[name], True)
    for name, spec in required.items():
        specs.setdefault(name, (name, spec, False))
    for name, spec in optional.items():
        specs.setdefault(name, (name, spec, True))
    return list(specs.values())


def _options(spec: Any) -> dict[str, Any]:
    if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1]
    return {}


def spec_type(spec: Any) -> str:
    """The type of an input spec: a list of choices is a COMBO."""
    if not isinstance(spec, (list, tuple)) or not spec:
        return ""
    head = spec[0]
    if isinstance(head, list):
        return "COMBO"
    return head if isinstance(head, str) else ""


def _add_page_inputs(class_type: str, required: dict[str, Any]) -> None:
    """The inputs the page adds to some definitions before drawing them."""
    if class_type in _MESH_PREVIEWS:
        required["image"] = [_MESH_PREVIEWS[class_type]]
    if class_type in _AUDIO_PLAYERS:
        required["audioUI"] = ["AUDIO_UI", {}]
    audio = required.get("audio")
    if _options(audio).get("audio_upload") is True:
        required["upload"] = ["AUDIOUPLOAD", {}]
    for name, spec in list(required.items()):
        opts = _options(spec)
        if any(opts.get(key) is True for key in _MEDIA_UPLOAD) and spec_type(spec) == "COMBO":
            required["upload"] = ["IMAGEUPLOAD", {**opts, "imageInputName": name}]
            break


def _combo_default(spec: Any) -> Any:
    opts = _options(spec)
    if opts.get("default"):
        return opts["default"]
    choices = spec[0] if isinstance(spec[0], list) else opts.get("options") or []
    if choices:
        return choices[0]
    return "Loading..." if opts.get("remote") else None


def layout(node_def: Mapping[str, Any]) -> list[Widget]:
    """The widgets of a node of this definition, in the page's order."""
    widgets: list[Widget] = []
    for name, spec, _optional in input_specs(node_def):
        kind = spec_type(spec)
        opts = _options(spec)
        if kind not in WIDGET_TYPES or opts.get("forceInput"):
            continue
        control = opts.get("control_after_generate")
        control_name = control if isinstance(control, str) else "control_after_generate"
        if kind == "INT":
            widgets.append(Widget(name, opts.get("default", 0)))
            if control or (control is None and name in ("seed", "noise_seed")):
                widgets.append(Widget(control_name, "randomize", sent=False))
        elif kind == "FLOAT":
            widgets.append(Widget(name, opts.get("default", 0)))
        elif kind == "BOOLEAN":
            widgets.append(Widget(name, opts.get("default", False)))
        elif kind == "STRING":
            widgets.append(Widget(name, opts.get("default", ""),
                                  dynamic_prompt=opts.get("dynamicPrompts") is True))
        elif kind == "COMBO":
            widgets.append(Widget(name, _combo_default(spec)))
            if isinstance(opts.get("remote"), dict) and opts["remote"].get("refresh_button"):
                widgets.append(Widget("refresh", "refresh", fixed=True))
            if control:
                widgets.append(Widget(control_name, "randomize", sent=False))
                filter_name = opts.get("control_filter_list")
                widgets.append(Widget(filter_name if isinstance(filter_name, str)
                                      else "control_filter_list", "", sent=False))
        elif kind == "IMAGEUPLOAD":
            target = next((w for w in widgets if w.name == opts.get("imageInputName")), None)
            if target is not None:
                target.folder = opts.get("image_folder") or "input"
            widgets.append(Widget(name, "image", sent=False))
        elif kind == "AUDIOUPLOAD":
            widgets.append(Widget(name, "upload", sent=False))
        elif kind == "AUDIO_UI":
            widgets.append(Widget(name, "", stored=False))
        else:
            widgets.append(Widget(name, opts.get("default")))
    if node_def.get("name") == "PreviewAny":
        widgets.append(Widget("preview", "", stored=False))
    return widgets


def apply_values(widgets: list[Widget], values: Any, class_type: str) -> None:
    """Put a saved node's `widgets_values` on its widgets, by position among
    the stored ones (an object of values, as some extensions write, is left
    alone, as the page does), then the page's load-time fixes."""
    if isinstance(values, list):
        stored = [widget for widget in widgets if widget.stored]
        for widget, value in zip(stored, values, strict=False):
            if not widget.fixed:
                widget.value = value
    for widget in widgets:
        if class_type in ("KSampler", "KSamplerAdvanced") and widget.name == "sampler_name" \
                and isinstance(widget.value, str) and widget.value.startswith("sample_"):
            widget.value = widget.value[len("sample_"):]
        if widget.name == "control_after_generate" and isinstance(widget.value, bool) \
                and class_type in ("KSampler", "KSamplerAdvanced", "PrimitiveNode"):
            widget.value = _CONTROL_VALUES[widget.value]


def sent_value(widget: Widget, choose: Callable[[list[str]], str] = random.choice) -> Any:
    """The value a widget puts into the API graph: a choice list `{a|b}` in a
    prompt resolved (at random, as the page does; `choose` picks) and comments
    removed; a list wrapped as {"__value__": [...]} so ComfyUI does not read it
    as a link; an upload choice outside input/ annotated with its folder."""
    value = widget.value
    if widget.dynamic_prompt and isinstance(value, str):
        value = dynamic_prompt(value, choose)
    if widget.folder != "input" and isinstance(value, str) \
            and not re.search(r"\[(input|output|temp)\]", value, re.IGNORECASE):
        value = f"{value} [{widget.folder}]"
    if isinstance(value, list):
        return {"__value__": value}
    return value


_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//.*")


def dynamic_prompt(text: str, choose: Callable[[list[str]], str] = random.choice) -> str:
    """`{a|b|c}` replaced by one of its options (nested blocks too), C-style
    comments removed, `\\{`, `\\}` and `\\|` kept as the literal characters."""
    source = _COMMENTS.sub("", text)
    position = 0

    def block() -> str:
        nonlocal position
        options: list[str] = []
        choice = ""
        depth = 0
        while position < len(source):
            char = source[position]
            position += 1
            if char == "\\":
                choice += "\\" + (source[position] if position < len(source) else "")
                position += 1
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                if not depth:
                    break
                depth -= 1
            elif char == "|" and not depth:
                options.append(choice)
                choice = ""
                continue
            choice += char
        options.append(choice)
        return dynamic_prompt(choose(options), choose)

    result = ""
    while position < len(source):
        char = source[position]
        position += 1
        if char == "\\":
            result += "\\" + (source[position] if position < len(source) else "")
            position += 1
        elif char == "{":
            result += block()
        else:
            result += char
    return re.sub(r"\\([{}|])", r"\1", result)
