"""The only Flower App a site runs is fedseal's own; any other bundle is refused unopened.

Flower's SuperNode installs the app bundle (FAB) the SuperLink sends and imports the ClientApp
it names, so without a check the coordinator chooses the code that runs at the site. fedseal's
FAB carries no code: it is a `pyproject.toml` naming components installed with fedseal, plus
the run's config. So the site computes, from its own installed fedseal, the one FAB it accepts
for the run config a FAB states (`write_app` + Flower's own builder, which is deterministic:
stored entries, fixed dates) and accepts a FAB only when it is byte for byte that one. The
coordinator still chooses the run config (data the ClientApp checks like any message), never
the code.

The check runs inside the SuperNode, on the FAB and run record the SuperLink returns, before
Flower stores either, i.e. before the ClientApp process could install or import anything. It
wraps one internal function of Flower 1.41's SuperNode (`_pull_and_store_message`), and
refuses to start the SuperNode on any other Flower version or signature
(docs/decisions.md, "The SuperNode runs only fedseal's ClientApp").

The site's SuperNode process (`fedseal.client.supernode_main`) installs the check before it
starts Flower's SuperNode.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import io
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Mapping
from logging import ERROR
from pathlib import Path
from typing import Any

from fedseal.client.errors import SiteError

__all__ = [
    "FLOWER_VERSION",
    "AppPinError",
    "FabRefused",
    "check_fab",
    "check_run",
    "expected_fab",
    "install_app_pin",
]

FLOWER_VERSION = "1.41.0"
"""The Flower release whose SuperNode internals `install_app_pin` wraps (pinned in pyproject)."""

MAX_FAB_BYTES = 1024 * 1024
"""Larger than any FAB fedseal builds (about 1.3 kB plus the run config), far below Flower's
10 MB limit; a bigger bundle is refused before it is opened."""

_FAB_FILES = ("pyproject.toml", ".info/CONTENT")
_AGENT_APP = "flwr-agentapp"
_WRAPPED = "_pull_and_store_message"
_WRAPPED_PARAMETERS = (
    "state",
    "object_store",
    "node_config",
    "receive",
    "get_run",
    "get_fab",
    "pull_object",
    "confirm_message_received",
    "trusted_entities",
)
_PINNED_MARK = "__fedseal_app_pin__"


class FabRefused(Exception):
    """The bundle (or the run record that names it) is not fedseal's own app; `str` says why."""


class AppPinError(SiteError, RuntimeError):
    """The check cannot be put in place (another Flower version): the SuperNode must not start."""


def expected_fab(run_config: Mapping[str, Any]) -> bytes:
    """The FAB fedseal itself submits for `run_config`: `write_app`, then Flower's builder, as
    `flwr run` does."""
    from flwr.cli.build import build_fab_from_disk

    from fedseal.contract.app_bundle import write_app

    with tempfile.TemporaryDirectory(prefix="fedseal-fab-") as folder:
        return build_fab_from_disk(write_app(Path(folder), run_config))


@functools.cache
def _reference() -> dict[str, Any]:
    """fedseal's own app document (without a run config): what the reasons compare against."""
    return _pyproject(expected_fab({}))


def _pyproject(fab: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(fab)) as archive, archive.open("pyproject.toml") as member:
        text = member.read(MAX_FAB_BYTES + 1)
    if len(text) > MAX_FAB_BYTES:
        raise FabRefused(f"its pyproject.toml is larger than {MAX_FAB_BYTES} bytes")
    try:
        return tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FabRefused(f"its pyproject.toml does not parse ({exc})") from None


def _app_table(document: Mapping[str, Any]) -> Mapping[str, Any]:
    table = document.get("tool", {})
    for key in ("flwr", "app"):
        table = table.get(key, {}) if isinstance(table, Mapping) else {}
    return table if isinstance(table, Mapping) else {}


def _component(document: Mapping[str, Any], name: str) -> object:
    components = _app_table(document).get("components", {})
    return components.get(name) if isinstance(components, Mapping) else None


def _first_difference(got: object, want: object, path: str = "") -> str | None:
    """The first dotted key at which two parsed TOML documents differ (None if equal)."""
    if isinstance(got, Mapping) and isinstance(want, Mapping):
        for key in [*want, *(k for k in got if k not in want)]:
            if key not in got or key not in want:
                return f"{path}{key}"
            found = _first_difference(got[key], want[key], f"{path}{key}.")
            if found is not None:
                return found
        return None
    return None if got == want else path.rstrip(".") or "(document)"


def _fab_id(document: Mapping[str, Any]) -> tuple[str, str]:
    """Flower's ("publisher/name", version) of an app document."""
    project = document.get("project", {})
    return f"{_app_table(document).get('publisher')}/{project.get('name')}", str(
        project.get("version")
    )


def check_fab(content: bytes, fab_hash: str | None = None) -> str:
    """Accept `content` only if it is the FAB fedseal builds for the run config it states;
    return its sha256, or raise FabRefused naming what is foreign in it.

    `fab_hash` is the digest the SuperLink claims for it; it must be the content's own.
    """
    digest = hashlib.sha256(content).hexdigest()
    if fab_hash is not None and fab_hash != digest:
        raise FabRefused(f"its claimed digest {fab_hash[:16]} is not its content's {digest[:16]}")
    if len(content) > MAX_FAB_BYTES:
        raise FabRefused(f"it is {len(content)} bytes, larger than any fedseal app bundle")
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise FabRefused(f"it is not a zip archive ({exc})") from None
    extra = [name for name in names if name not in _FAB_FILES]
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise FabRefused(f"it carries files fedseal's app does not ({shown})")
    if "pyproject.toml" not in names:
        raise FabRefused("it has no pyproject.toml")
    document = _pyproject(content)
    reference = _reference()
    for component in ("clientapp", "serverapp"):
        got, want = _component(document, component), _component(reference, component)
        if got != want:
            raise FabRefused(f"its {component} component is {got!r}, not fedseal's {want!r}")
    got_publisher = _app_table(document).get("publisher")
    want_publisher = _app_table(reference).get("publisher")
    if got_publisher != want_publisher:
        raise FabRefused(f"its publisher is {got_publisher!r}, not {want_publisher!r}")
    run_config = _app_table(document).get("config", {})
    if not isinstance(run_config, Mapping):
        raise FabRefused("its run config is not a table")
    try:
        expected = expected_fab(run_config)
    except Exception as exc:  # whatever Flower's builder rejects, refuse it
        raise FabRefused(f"fedseal cannot build an app for its run config ({exc})") from None
    if expected != content:
        where = _first_difference(document, _pyproject(expected))
        detail = f"differs at {where}" if where else "is laid out differently"
        raise FabRefused(
            f"it is not the app fedseal builds for its run config: its pyproject.toml {detail} "
            f"(sha256 {digest[:16]}, fedseal's {hashlib.sha256(expected).hexdigest()[:16]})"
        )
    return digest


def check_run(run: Any, fab: Any) -> str:
    """Check the FAB and the run record that names it (both from the SuperLink); return the
    FAB's sha256 or raise FabRefused.

    The ClientApp process finds the installed app by the record's `fab_id`, `fab_version` and
    `fab_hash`, so those must be fedseal's too (a version like `1/../../x` would point Flower
    elsewhere); and only ClientApp tasks are run.
    """
    digest = check_fab(bytes(fab.content), str(fab.hash_str))
    if str(run.fab_hash) != digest:
        raise FabRefused(f"its run names FAB {str(run.fab_hash)[:16]}, not {digest[:16]}")
    want_id, want_version = _fab_id(_reference())
    if (str(run.fab_id), str(run.fab_version)) != (want_id, want_version):
        raise FabRefused(
            f"its run names app {run.fab_id!r} version {run.fab_version!r}, "
            f"not {want_id!r} {want_version!r}"
        )
    if str(getattr(run, "primary_task_type", "")) == _AGENT_APP:
        raise FabRefused("its run is an AgentApp run, not a ClientApp one")
    return digest


def _describe(fab: bytes) -> str:
    """The bundle's own claims, for the refusal line (never trusted, only shown)."""
    try:
        document = _pyproject(fab)
    except Exception:  # a bundle that does not even parse is named by digest
        return "an unreadable app"
    clientapp = _component(document, "clientapp")
    return f"app {_fab_id(document)[0]!r} (clientapp {clientapp!r})"


def _guarded(original: Callable[..., int | None], insert_message: Callable[..., None]):
    """`_pull_and_store_message` with every newly fetched run and FAB checked first."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode
    from flwr.supercore import log

    signature = inspect.signature(original)

    @functools.wraps(original)
    def pull_and_store_message(*args: Any, **kwargs: Any) -> int | None:
        bound = signature.bind(*args, **kwargs)
        arguments = bound.arguments
        receive, get_run, get_fab = arguments["receive"], arguments["get_run"], arguments["get_fab"]
        seen: dict[str, Any] = {}

        def receive_remembering() -> Any:
            received = receive()
            if received is not None:
                seen["message"] = received[0]
            return received

        def get_run_remembering(run_id: int) -> Any:
            seen["run"] = run = get_run(run_id)
            return run

        def get_checked_fab(fab_hash: str, run_id: int) -> Any:
            fab = get_fab(fab_hash, run_id)
            seen["fab"] = fab
            if "run" not in seen or int(seen["run"].run_id) != int(run_id):
                raise FabRefused("its FAB was fetched without its run record")
            try:
                check_run(seen["run"], fab)
            except FabRefused:
                raise
            except Exception as exc:  # a check that cannot finish refuses
                raise FabRefused(f"it could not be checked ({type(exc).__name__}: {exc})") from None
            return fab

        arguments.update(
            receive=receive_remembering, get_run=get_run_remembering, get_fab=get_checked_fab
        )
        try:
            return original(*bound.args, **bound.kwargs)
        except FabRefused as refusal:
            message = seen.get("message")
            if message is None:
                raise
            node_config = arguments.get("node_config") or {}
            fab = seen.get("fab")
            content = bytes(fab.content) if fab is not None else b""
            log(
                ERROR,
                "fedseal: site %s refused the Flower App of run %s, %s, FAB sha256 %s: %s; "
                "nothing of it was installed or run",
                node_config.get("site", "?"),
                message.metadata.run_id,
                _describe(content),
                hashlib.sha256(content).hexdigest()[:16],
                refusal,
            )
            reason = f"the site refused this app: {refusal} (it runs only fedseal's ClientApp)"
            reply = Message(Error(ErrorCode.INVALID_FAB, reason), reply_to=message)
            insert_message(reply, arguments["state"], arguments["object_store"])
            return int(message.metadata.run_id)

    setattr(pull_and_store_message, _PINNED_MARK, True)
    return pull_and_store_message


def install_app_pin() -> None:
    """Put the check into this process's Flower SuperNode; AppPinError if it cannot be."""
    import flwr

    version = getattr(flwr, "__version__", None)
    if version != FLOWER_VERSION:
        raise AppPinError(
            f"the app check wraps Flower {FLOWER_VERSION}'s SuperNode, this is Flower {version}; "
            "refusing to start a SuperNode that would run any app the coordinator sends"
        )
    module = importlib.import_module("flwr.supernode.start_client_internal")
    original = getattr(module, _WRAPPED, None)
    insert_message = getattr(module, "_insert_message", None)
    if getattr(original, _PINNED_MARK, False):
        return
    if original is None or insert_message is None:
        raise AppPinError(f"Flower's SuperNode has no {_WRAPPED} to check apps in")
    parameters = tuple(inspect.signature(original).parameters)
    if parameters != _WRAPPED_PARAMETERS:
        raise AppPinError(f"Flower's {_WRAPPED} takes {parameters}, not {_WRAPPED_PARAMETERS}")
    _reference()  # build fedseal's own app once now: a broken install fails before joining
    setattr(module, _WRAPPED, _guarded(original, insert_message))
