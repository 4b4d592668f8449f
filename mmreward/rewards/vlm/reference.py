"""A checkpoint's training prompt, read at run time from where its authors publish it.

A reward token's hidden state (and a judge's verdict) depends on every word before it, so a checkpoint scores on
distribution only with the wording it was trained on. That wording belongs to the checkpoint's authors and is not
copied into this repository: a template names where it is published (a GitHub repository, a pinned commit, a file
and the expression that builds the prompt there), and this module

1. fetches the file once at that commit and verifies its sha256 (so a moved branch or an edited file is refused,
   never silently used), caching it under ``$HF_HOME/mmreward/templates/<owner>/<repo>/<commit>/<path>`` next to
   the weights (:mod:`mmreward.pinned_files`); ``HF_HUB_OFFLINE`` is honoured, and ``source_dir`` reads a local
   clone instead;
2. reads the prompt out of the Python source **without executing it**: the file is parsed with :mod:`ast`, and the
   expression (``INSTRUCTION.format(text_prompt=prompt) + SUFFIX``, ``problem``,
   ``messages[0]["content"][2]["text"]``) is evaluated over the parsed module by a small interpreter that knows
   string constants, f-strings, ``+``, ``str.format`` with keyword arguments, ``string.Template(...).substitute``
   with keyword arguments, names bound by module-level assignments (or, with a ``scope``, by the top-level
   assignments of that function, which take precedence), and subscripts of literal lists and dicts; anything else is
   refused. A Markdown file (``.md``) is read through its fenced Python code block that defines the ``scope``
   function (authors who publish their inference recipe in a README);
3. returns the text in our template syntax: the reference's caption variable becomes ``{prompt}`` and literal
   braces are doubled, so :mod:`mmreward.rewards.vlm.templates` places it between the media slots.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmreward import pinned_files
from mmreward.errors import ConfigError, ReferenceMismatchError, ReferenceNotAvailableError
from mmreward.pinned_files import PinnedFile

# A template's pinned source file; the generic fetch/verify/cache lives in mmreward.pinned_files.
ReferenceFile = PinnedFile


def parse_reference_file(raw: Any, where: str) -> ReferenceFile:
    """Validate a ``{repository, commit, path, sha256}`` mapping from a template file."""
    return pinned_files.parse_mapping(raw, where)


def cache_root() -> Path:
    """``$HF_HOME/mmreward/templates``: beside the hub cache, so copying HF_HOME carries the prompts along."""
    return pinned_files.hf_cache_root("templates")


def cache_path(ref: ReferenceFile) -> Path:
    return pinned_files.cache_path(ref, cache_root())


def _mismatch(ref: ReferenceFile) -> Callable[[str, str], ReferenceMismatchError]:
    def error(digest: str, origin: str) -> ReferenceMismatchError:
        return ReferenceMismatchError(
            f"reference prompt file {ref.describe()} read from {origin} has sha256 {digest}, but the template pins "
            f"{ref.digest}: it is not the file at commit {ref.commit}, so it is not used. For a local clone run "
            f"`git checkout {ref.commit}` there; for a cached copy delete {cache_path(ref)} to download it again; "
            "or keep our wording with template='ours'"
        )

    return error


def read_reference_file(ref: ReferenceFile, source_dir: str | Path | None = None) -> str:
    """The verified text of ``ref``: from ``source_dir`` (a local clone) when given, else the cache, else a download
    (which is then cached).

    Raises:
        ReferenceNotAvailableError: offline (or unreachable) with no cached copy, or ``source_dir`` lacks the file.
        ReferenceMismatchError: the bytes found do not have the pinned sha256.
    """
    if source_dir is not None:
        path = Path(source_dir).expanduser() / ref.path
        if not path.is_file():
            raise ReferenceNotAvailableError(
                f"template_source_dir {str(source_dir)!r} has no file {ref.path!r}; point it at a clone of "
                f"https://github.com/{ref.repository} checked out at {ref.commit}"
            )
        return pinned_files.verify(path.read_bytes(), ref, str(path), _mismatch(ref)).decode("utf-8")
    cached = pinned_files.read_pinned(
        ref, cache_root(), unavailable=lambda reason: _not_available(ref, reason), mismatch=_mismatch(ref)
    )
    return cached.read_text(encoding="utf-8")


def _not_available(ref: ReferenceFile, reason: str) -> ReferenceNotAvailableError:
    return ReferenceNotAvailableError(
        f"the checkpoint's reference prompt {ref.describe()} is not available: {reason}, and there is no cached copy "
        f"at {cache_path(ref)}. Either download it once where GitHub is reachable (load the reward once, or fetch "
        f"{ref.url} to that path) and copy HF_HOME along with the weights, or pass "
        f"template_source_dir=/path/to/a/clone of https://github.com/{ref.repository} at commit {ref.commit}, "
        "or use our own wording with template='ours'"
    )


# -- reading a prompt out of Python source without running it -----------------------------------------------------


_FENCE = re.compile(r"^```(?:python|py)[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_block(markdown: str, function: str | None, where: str) -> str:
    """The fenced Python code block of ``markdown`` that defines ``function`` at its top level."""
    if function is None:
        raise ConfigError(f"{where}: a Markdown reference needs a scope (the function whose prompt is read)")
    for block in _FENCE.findall(markdown):
        try:
            module = ast.parse(block)
        except SyntaxError:
            continue  # an illustrative fragment, not the recipe
        if any(isinstance(n, ast.FunctionDef) and n.name == function for n in module.body):
            return block
    raise ConfigError(f"{where}: no fenced Python block of the Markdown file defines a function {function!r}")


@dataclass(frozen=True)
class _Field:
    """A hole in the reference text that we fill: one of our template fields (``prompt``)."""

    name: str


_Text = tuple[str | _Field, ...]  # literal pieces and field holes, in order


@dataclass(frozen=True)
class _StringTemplate:
    """``string.Template(text)``: a text whose ``$name`` placeholders ``.substitute(name=...)`` fills."""

    text: _Text


def extract_prompt(
    source: str,
    expression: str,
    bindings: dict[str, str],
    where: str,
    *,
    scope: str | None = None,
    markdown: bool = False,
) -> str:
    """The prompt that ``expression`` builds in the Python module ``source``, in our template syntax.

    Args:
        source: the reference file's text; parsed, never executed.
        expression: a Python expression over the module's names, e.g. ``"INSTRUCTION.format(text_prompt=prompt)"``.
        bindings: free names of the reference -> our template field, e.g. ``{"prompt": "prompt"}``: where the
            reference puts the caption. They take precedence over assignments of the same name. An empty mapping
            reads a text without fields (a system message).
        where: the template and section, for messages.
        scope: a module-level function whose top-level assignments are visible (before module-level ones): for
            prompts built inside the authors' ``main``.
        markdown: ``source`` is Markdown; the fenced Python block that defines ``scope`` is read.

    Returns:
        the text with ``{field}`` holes and literal braces doubled.
    """
    if markdown:
        source = python_block(source, scope, where)
    try:
        module = ast.parse(source)
    except SyntaxError as err:
        raise ConfigError(f"{where}: the reference file does not parse as Python: {err}") from err
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError as err:
        raise ConfigError(f"{where}: expression {expression!r} is not a Python expression: {err}") from err
    evaluator = _Evaluator(module, bindings, where, scope)
    value = evaluator.eval(tree)
    if not isinstance(value, tuple):
        raise ConfigError(f"{where}: expression {expression!r} gives a {type(value).__name__}, not a text")
    used = {p.name for p in value if isinstance(p, _Field)}
    if set(bindings.values()) - used:
        raise ConfigError(
            f"{where}: expression {expression!r} never uses {sorted(set(bindings.values()) - used)}; the reference "
            "prompt must show the caption"
        )
    return "".join(p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else f"{{{p.name}}}" for p in value)


class _Evaluator:
    """Evaluates the few expression forms prompt builders use, over a parsed module, without executing it."""

    def __init__(self, module: ast.Module, bindings: dict[str, str], where: str, scope: str | None = None) -> None:
        self.bindings = bindings
        self.where = where
        self.assignments: dict[str, ast.expr] = {}
        self._assign(module.body)  # the last assignment wins, as at import time
        if scope is not None:
            functions = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == scope]
            if not functions:
                raise ConfigError(f"{where}: the reference file defines no module-level function {scope!r}")
            self._assign(functions[-1].body)  # the function's own names shadow the module's
        # string.Template, only when the file imports it under that name (never a name of the file's own)
        self.template_names = {
            alias.asname or alias.name
            for node in module.body
            if isinstance(node, ast.ImportFrom) and node.module == "string"
            for alias in node.names
            if alias.name == "Template"
        }
        self.resolving: list[str] = []

    def _assign(self, body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.assignments[target.id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                self.assignments[node.target.id] = node.value

    def fail(self, node: ast.AST, what: str) -> ConfigError:
        return ConfigError(
            f"{self.where}: cannot read the reference prompt: {what} (`{ast.unparse(node)}`); only string constants, "
            "f-strings, '+', str.format(name=...), string.Template(...).substitute(name=...), assigned names and "
            "subscripts of literal lists and dicts are read"
        )

    def eval(self, node: ast.expr) -> _Text | _StringTemplate | ast.expr:
        """A text (tuple of str / _Field) or a literal container node (list, tuple, dict) to subscript."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return (node.value,)
            if isinstance(node.value, int) and not isinstance(node.value, bool):
                return node
            raise self.fail(node, f"a {type(node.value).__name__} constant")
        if isinstance(node, ast.JoinedStr):
            pieces: list[Any] = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    pieces.append(value.value)
                elif isinstance(value, ast.FormattedValue):
                    if value.conversion != -1 or value.format_spec is not None:
                        raise self.fail(value, "a conversion or format spec in an f-string")
                    pieces.extend(self.text(value.value))
            return tuple(pieces)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.text(node.left) + self.text(node.right)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, (ast.List, ast.Tuple, ast.Dict)):
            return node
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Call):
            if (
                isinstance(node.func, ast.Name)
                and node.func.id in self.template_names
                and node.func.id not in (self.assignments)
            ):
                if len(node.args) != 1 or node.keywords:
                    raise self.fail(node, "string.Template with other than one text argument")
                return _StringTemplate(self.text(node.args[0]))
            if isinstance(node.func, ast.Attribute) and node.func.attr == "substitute":
                return self.substitute_call(node)
            return self.format_call(node)
        raise self.fail(node, f"a {type(node).__name__} expression")

    def text(self, node: ast.expr) -> _Text:
        value = self.eval(node)
        if not isinstance(value, tuple):
            raise self.fail(node, "not a text")
        return value

    def name(self, node: ast.Name) -> _Text | ast.expr:
        if node.id in self.bindings:
            return (_Field(self.bindings[node.id]),)
        if node.id not in self.assignments:
            raise self.fail(node, f"name {node.id!r} is neither assigned at module level nor bound to a field")
        if node.id in self.resolving:
            raise self.fail(node, f"name {node.id!r} refers to itself")
        self.resolving.append(node.id)
        try:
            return self.eval(self.assignments[node.id])
        finally:
            self.resolving.pop()

    def subscript(self, node: ast.Subscript) -> _Text | ast.expr:
        container = self.eval(node.value)
        key_node = self.eval(node.slice)
        key = key_node.value if isinstance(key_node, ast.Constant) else _literal(key_node, node, self)
        if isinstance(container, (ast.List, ast.Tuple)) and isinstance(key, int):
            if not -len(container.elts) <= key < len(container.elts):
                raise self.fail(node, f"index {key} outside a list of {len(container.elts)}")
            return self.eval(container.elts[key])
        if isinstance(container, ast.Dict) and isinstance(key, str):
            for k, v in zip(container.keys, container.values, strict=True):
                if k is not None and isinstance(k, ast.Constant) and k.value == key:
                    return self.eval(v)
            raise self.fail(node, f"no key {key!r} in the dict")
        raise self.fail(node, "a subscript of something other than a literal list or dict")

    def format_call(self, node: ast.Call) -> _Text:
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr == "format") or node.args:
            raise self.fail(node, "a call other than str.format with keyword arguments")
        receiver = _literal(self.text(func.value), node, self)
        values: dict[str, _Text] = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                raise self.fail(node, "**kwargs in str.format")
            values[keyword.arg] = self.text(keyword.value)
        pieces: list[Any] = []
        try:
            parsed = list(string.Formatter().parse(receiver))
        except ValueError as err:
            raise self.fail(node, f"a malformed format string ({err})") from err
        for literal, field, spec, conversion in parsed:
            pieces.append(literal)
            if field is None:
                continue
            if spec or conversion or field not in values:
                raise self.fail(node, f"format field {{{field}}} with no keyword argument, or with a spec")
            pieces.extend(values[field])
        return tuple(p for p in pieces if p != "")

    def substitute_call(self, node: ast.Call) -> _Text:
        """``Template(text).substitute(name=...)``: ``$name`` / ``${name}`` filled, ``$$`` a dollar sign."""
        receiver = self.eval(node.func.value)
        if not isinstance(receiver, _StringTemplate) or node.args:
            raise self.fail(node, "substitute of something other than string.Template, or with positional arguments")
        template = _literal(receiver.text, node, self)
        values: dict[str, _Text] = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                raise self.fail(node, "**kwargs in Template.substitute")
            values[keyword.arg] = self.text(keyword.value)
        pieces: list[Any] = []
        end = 0
        for match in string.Template.pattern.finditer(template):
            pieces.append(template[end : match.start()])
            end = match.end()
            if match.group("escaped") is not None:
                pieces.append("$")
                continue
            name = match.group("named") or match.group("braced")
            if name is None or name not in values:
                raise self.fail(node, f"placeholder {match.group(0)!r} with no keyword argument")
            pieces.extend(values[name])
        pieces.append(template[end:])
        return tuple(p for p in pieces if p != "")


def _literal(value: Any, node: ast.AST, evaluator: _Evaluator) -> str:
    """A text with no field holes (a format string or a dict key)."""
    if not isinstance(value, tuple) or not all(isinstance(p, str) for p in value):
        raise evaluator.fail(node, "a format string or key that itself depends on a field")
    return "".join(value)
