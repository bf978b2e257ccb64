"""`fl-coordinator`: the operator's command line.

- `init-pki`: the federation's CA and the SuperLink's TLS certificate, and the coordinator's
  ledger key in the state folder.
- `site-auth-key`: an ECDSA P-384 OpenSSH key pair for a site's SuperNode authentication.
- `enroll` / `revoke`: a site's fedseal keys in the registry (a chained ledger event), and
  optionally its SuperNode key with Flower's node authentication (`flwr supernode register`).
- `start-run`: submit a run to the SuperLink and follow it in the registry; a run whose
  SuperLink or ServerApp died is continued from its last completed round.
- `status`: runs, rounds and each site's ε spent against its budget (reads only; no ledger key).

Every mistake a person can fix ends in one line on stderr and exit code 2; a `flwr` command that
fails after the registry was written ends with exit code 4 and says what was already done.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_support import ExitCode, UserError, run_cli
from fedseal.contract.regime import REGIMES
from fedseal.contract.run_plan import AdapterKind

if TYPE_CHECKING:
    from fedseal.registry import Registry

__all__ = ["STATE_ENV", "build_parser", "main"]

PROG = "fl-coordinator"
STATE_ENV = "FEDSEAL_COORDINATOR_STATE"
DEFAULT_STATE = Path("coordinator-state")
REGISTRY_FILE = "registry.db"
FLWR_HOME_ENV = "FLWR_HOME"

_EPILOG = (
    "Exit codes: 0 done, 2 usage error (bad argument, missing or malformed file, unknown site, "
    "unreachable database), 4 a `flwr` command failed (what was done before it stays done), "
    "130 interrupted."
)


def _common(parser: argparse.ArgumentParser, *, database: bool = True) -> None:
    if database:
        parser.add_argument(
            "--database",
            metavar="URL",
            help="registry database URL (default: $FEDSEAL_DATABASE_URL, else the SQLite file "
            f"STATE/{REGISTRY_FILE})",
        )
    parser.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help=f"the coordinator's state folder, holding keys/ledger.key (default: ${STATE_ENV}, "
        f"else ./{DEFAULT_STATE})",
    )


def _flower_options(parser: argparse.ArgumentParser, what: str) -> None:
    from .flower_app import CONNECTION_NAME

    parser.add_argument(
        "--connection",
        default=CONNECTION_NAME,
        metavar="NAME",
        help=f"the SuperLink connection in FLWR_HOME/config.toml used to {what} "
        f"(default: {CONNECTION_NAME})",
    )
    parser.add_argument(
        "--flwr-home",
        type=Path,
        metavar="DIR",
        help=f"the FLWR_HOME folder whose config.toml defines the connection (default: "
        f"${FLWR_HOME_ENV})",
    )


def build_parser() -> argparse.ArgumentParser:
    from .pki import DEFAULT_SERVER_NAMES

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate a fedseal federation: make its PKI, enrol and revoke sites, start "
        "runs, and see its runs and each site's privacy spend.",
        epilog=_EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pki = commands.add_parser(
        "init-pki",
        help="make the CA, the SuperLink's TLS certificate and the coordinator's ledger key",
        description="Make, in --out, a CA (ca.crt, ca.key) and a SuperLink server certificate "
        "signed by it (server.pem, server.key), all ECDSA P-384; keys are written 0600. Also make "
        "the coordinator's ledger key in STATE/keys/. Existing files are kept (and listed as "
        "kept), never overwritten. Use them as `flower-superlink --ssl-ca-certfile ca.crt "
        "--ssl-certfile server.pem --ssl-keyfile server.key` and `flower-supernode "
        "--root-certificates ca.crt`.",
        epilog=_EPILOG,
    )
    pki.add_argument("--out", required=True, type=Path, metavar="DIR", help="the PKI folder")
    pki.add_argument(
        "--superlink-host",
        action="append",
        metavar="NAME",
        help="a DNS name or IP address the SuperLink is reached at; repeat for several "
        f"(default: {', '.join(DEFAULT_SERVER_NAMES)})",
    )
    pki.add_argument(
        "--days",
        type=int,
        default=365,
        metavar="N",
        help="validity of new certificates in days (default: 365)",
    )
    _common(pki, database=False)

    auth = commands.add_parser(
        "site-auth-key",
        help="make a site's SuperNode authentication key pair (ECDSA P-384, OpenSSH)",
        description="Write an ECDSA P-384 private key in OpenSSH format to PATH (0600) and its "
        "public key to PATH.pub. The site runs `flower-supernode --auth-supernode-private-key "
        "PATH`; the operator registers PATH.pub (`fl-coordinator enroll --auth-public-key`). "
        "An existing matching pair is kept.",
        epilog=_EPILOG,
    )
    auth.add_argument("--out", required=True, type=Path, metavar="PATH", help="private key file")

    enroll = commands.add_parser(
        "enroll",
        help="enrol a site's public keys in the registry (and its SuperNode key with Flower)",
        description="Record the site's identity and sealing public keys (the JSON file that "
        "`fl-client --site=NAME enroll` writes) in the registry, as a signed, chained "
        "site_enrolled event; enrolling the same keys again changes nothing. With "
        "--auth-public-key, also register that key with the SuperLink's node authentication: "
        "`flwr supernode register KEY.pub CONNECTION --name SITE`, and keep the node id in "
        "STATE/flower-nodes.json.",
        epilog=_EPILOG,
    )
    enroll.add_argument("--site", required=True, metavar="NAME", help="the site's name")
    enroll.add_argument(
        "--keys",
        required=True,
        type=Path,
        metavar="PUBLIC_KEYS_JSON",
        help="the site's public key file (keys/site-public-keys.json in the site's state)",
    )
    enroll.add_argument(
        "--auth-public-key",
        type=Path,
        metavar="PATH.pub",
        help="the site's SuperNode public key (OpenSSH, NIST EC curve) to register with Flower",
    )
    _flower_options(enroll, "register the SuperNode key")
    _common(enroll)

    revoke = commands.add_parser(
        "revoke",
        help="revoke a site in the registry (and unregister its SuperNode from Flower)",
        description="Revoke the site for good: it is no longer sampled and its statements are "
        "refused (a signed, chained site_revoked event). If its SuperNode was registered by "
        "`enroll` (or --node-id is given) and a FLWR_HOME is known, it is also unregistered: "
        "`flwr supernode unregister NODE_ID CONNECTION`.",
        epilog=_EPILOG,
    )
    revoke.add_argument("--site", required=True, metavar="NAME", help="the site's name")
    revoke.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    revoke.add_argument(
        "--node-id",
        type=int,
        metavar="ID",
        help="Flower's node id of the site's SuperNode (default: the one `enroll` recorded)",
    )
    _flower_options(revoke, "unregister the SuperNode")
    _common(revoke)

    manifest = commands.add_parser(
        "manifest",
        help="write the federation manifest that every site reviews and pins",
        description="Write the federation manifest from the members' public key files (what "
        "`fl-client --site=NAME enroll` printed): members, accepted modes, how many colluding "
        "sites every round must withstand, and a version. Give it to each site's operator, "
        "who checks its fingerprint with you out of band and pins it with `fl-client "
        "--site=NAME trust FILE`; sites refuse rounds it does not allow. A new member means a "
        "new version that every site pins again.",
        epilog=_EPILOG,
    )
    manifest.add_argument(
        "--keys",
        required=True,
        nargs="+",
        type=Path,
        metavar="PUBLIC_KEYS_JSON",
        help="each member's public key file (keys/site-public-keys.json in its state)",
    )
    manifest.add_argument("--out", required=True, type=Path, help="where to write it (new file)")
    manifest.add_argument("--federation", default="fedseal", help="the federation's name")
    manifest.add_argument("--version", type=int, default=1, help="the manifest's version (>= 1)")
    manifest.add_argument(
        "--modes",
        nargs="+",
        default=["he+ss"],
        choices=["plain", "he", "he+ss"],
        help="aggregation modes the federation accepts (default: he+ss only)",
    )
    manifest.add_argument(
        "--max-colluding",
        type=int,
        default=None,
        metavar="C",
        help="member sites that may collude with the coordinator while each other site's "
        "update stays hidden (default: a minority, (members - 1) // 2)",
    )

    start = commands.add_parser(
        "start-run",
        help="submit a run to the SuperLink and follow it until it finishes",
        description="Submit a run of fedseal's ServerApp to the SuperLink (`flwr run` on the "
        "connection in FLWR_HOME/config.toml) and, with --wait, follow its rounds in the "
        "registry until it finishes. The Flower run id is kept in STATE/current-run.json: "
        "started again while that run is unfinished, it follows it instead of submitting "
        "another (--new submits anyway); one whose coordinator died is continued from its last "
        "completed round (--resume, or by itself with --wait). The run config carries the "
        "registry URL: keep "
        "passwords out of it (PostgreSQL: PGPASSWORD in the SuperLink's environment).",
        epilog="Exit codes: 0 submitted (with --wait: the run completed), 1 the run failed or "
        "was aborted, 2 usage error, 3 --wait gave up after --timeout, 4 `flwr run` failed, "
        "130 interrupted.",
    )
    start.add_argument(
        "--scenario", default="hospitals", help="the demo scenario whose labels the run uses"
    )
    start.add_argument(
        "--mode",
        choices=("he+ss", "he", "plain"),
        default="he+ss",
        help="aggregation protocol (default he+ss; never silently weakened)",
    )
    start.add_argument(
        "--max-colluding",
        type=int,
        default=-1,
        metavar="C",
        help="member sites that may collude with the coordinator while each other site's "
        "update stays hidden in he+ss: the Shamir threshold is k > (n + C) / 2 (default: a "
        "minority, (n - 1) // 2; with 3 sites that is 1, so k = 3 and no site may drop out of "
        "a round; 0 lets one of 3 drop out but trusts that no site colludes)",
    )
    start.add_argument(
        "--adapter",
        choices=tuple(a.value for a in AdapterKind),
        default=AdapterKind.HEAD.value,
        help="what trains and travels: head (a linear head over the frozen base model's cached "
        "embeddings; default, the measured DP regime on CPU sites) or lora (LoRA and the head "
        "through the whole model, for GPU sites)",
    )
    start.add_argument(
        "--rounds", type=int, default=None, help="federated rounds (default: the regime's, 5)"
    )
    start.add_argument(
        "--steps",
        type=int,
        default=None,
        help="local training steps per round (default: the regime's, 20)",
    )
    start.add_argument(
        "--min-sites",
        type=int,
        metavar="N",
        help="sites that must be connected before round 1 (default: every enrolled site)",
    )
    start.add_argument("--seed", type=int, default=0, help="model and sampling seed (default 0)")
    start.add_argument(
        "--round-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long each stage waits for sites before counting them dropped (default 600)",
    )
    start.add_argument("--wait", action="store_true", help="follow the run until it finishes")
    start.add_argument(
        "--timeout",
        type=float,
        default=6 * 3600.0,
        metavar="SECONDS",
        help="with --wait, give up after this long (default 21600)",
    )
    start.add_argument(
        "--new", action="store_true", help="submit even if the recorded run is unfinished"
    )
    start.add_argument(
        "--resume",
        action="store_true",
        help="continue the registry's run that is still running (its coordinator stopped) from "
        "its last completed round; give the same options as the first time",
    )
    start.add_argument(
        "--max-resumes",
        type=int,
        default=3,
        metavar="N",
        help="with --wait: if the SuperLink or ServerApp dies mid-run, continue the run from "
        "its last completed round up to N times (default 3; 0: just fail)",
    )
    _flower_options(start, "submit the run")
    _common(start)

    status = commands.add_parser(
        "status",
        help="show runs, rounds and each site's ε spent against its budget",
        description="Print every run, the rounds of one run (--run, else the latest) and each "
        "site's status and ε spent against its budget, from the registry. Reads only; needs no "
        "ledger key.",
        epilog=_EPILOG,
    )
    status.add_argument("--run", type=int, metavar="ID", help="the registry's run id")
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _common(status)
    return parser


# -- helpers ------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state is not None:
        return args.state
    env = os.environ.get(STATE_ENV, "").strip()
    return Path(env) if env else DEFAULT_STATE


def _database_url(args: argparse.Namespace) -> str:
    from fedseal.registry import resolve_database_url

    return resolve_database_url(args.database, _state_dir(args) / REGISTRY_FILE)


def _open(args: argparse.Namespace, *, writing: bool) -> Registry:
    from fedseal.registry import RegistryUnavailable, open_registry
    from fedseal.registry.ledger_key import LedgerKeyError, load_ledger_key

    key = None
    if writing:
        try:
            key = load_ledger_key(_state_dir(args))
        except LedgerKeyError as exc:
            raise UserError(
                f"{exc}; run `{PROG} init-pki` (or pass the right --state) first"
            ) from None
    url = _database_url(args)
    if not writing:
        _refuse_missing_sqlite(url)
    try:
        return open_registry(url, ledger_key=key)
    except RegistryUnavailable as exc:
        raise UserError(str(exc)) from None


def _refuse_missing_sqlite(url: str) -> None:
    """Reading must not create an empty SQLite registry where none was meant to be."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # open_registry says what is wrong with it
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if parsed.query.get("uri") in ("true", "1"):
        return
    if not Path(parsed.database).expanduser().exists():
        raise UserError(f"no registry database at {parsed.database}")


def _flwr_home(args: argparse.Namespace) -> Path | None:
    if args.flwr_home is not None:
        return args.flwr_home
    env = os.environ.get(FLWR_HOME_ENV, "").strip()
    return Path(env) if env else None


def _checked_flwr_home(args: argparse.Namespace) -> Path:
    home = _flwr_home(args)
    if home is None:
        raise UserError(
            f"registering with Flower needs --flwr-home DIR (or ${FLWR_HOME_ENV}) naming the "
            "folder whose config.toml defines the SuperLink connection"
        )
    if not (home / "config.toml").is_file():
        raise UserError(f"{home / 'config.toml'} does not exist: no Flower connections there")
    return home


# -- commands -----------------------------------------------------------------------------------


def _init_pki(args: argparse.Namespace) -> int:
    from fedseal.registry.ledger_key import LedgerKeyError, create_ledger_key, ledger_key_path

    from .pki import DEFAULT_SERVER_NAMES, PkiError, init_pki

    names = args.superlink_host or list(DEFAULT_SERVER_NAMES)
    try:
        result = init_pki(args.out, names, args.days)
    except PkiError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write the PKI in {args.out}: {exc}") from None
    for path in result.made:
        _say(f"made {path}")
    for path in result.kept:
        _say(f"kept existing {path} (not overwritten)")
    state = _state_dir(args)
    try:
        key, made = create_ledger_key(state)
    except LedgerKeyError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write the ledger key in {state}: {exc}") from None
    del key
    verb = "made" if made else "kept existing"
    _say(f"{verb} the coordinator's ledger key {ledger_key_path(state)}")
    return ExitCode.OK


def _site_auth_key(args: argparse.Namespace) -> int:
    from .pki import PkiError, make_site_auth_key

    try:
        result = make_site_auth_key(args.out)
    except PkiError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc}") from None
    for path in result.made:
        _say(f"made {path}")
    for path in result.kept:
        _say(f"kept existing {path} (not overwritten)")
    return ExitCode.OK


def _read_site_keys(path: Path, site: str) -> bytes:
    from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    try:
        keys = SitePublicKeys.from_json(text)
    except SiteKeyError as exc:
        raise UserError(f"{path}: {exc}") from None
    if keys.site != site:
        raise UserError(f"{path} holds the keys of site {keys.site!r}, not {site!r}")
    return keys.to_bundle()


def _write_manifest(args: argparse.Namespace) -> int:
    from fedseal.contract.manifest import (
        FederationManifest,
        ManifestError,
        ManifestMember,
        minority,
    )
    from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys
    from fedseal.secure_agg.params import Mode

    members: dict[str, ManifestMember] = {}
    for path in args.keys:
        try:
            keys = SitePublicKeys.from_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        except SiteKeyError as exc:
            raise UserError(f"{path}: {exc}") from None
        if keys.site in members:
            raise UserError(f"site {keys.site} is given twice")
        members[keys.site] = ManifestMember(keys.site, keys.identity, keys.sealing)
    colluding = minority(len(members)) if args.max_colluding is None else args.max_colluding
    try:
        manifest = FederationManifest(
            args.federation,
            args.version,
            members,
            frozenset(Mode(m) for m in args.modes),
            colluding,
        )
    except ManifestError as exc:
        raise UserError(str(exc)) from None
    try:
        with open(args.out, "xb") as handle:
            handle.write(manifest.to_bytes())
    except FileExistsError:
        raise UserError(f"{args.out} exists; nothing was overwritten") from None
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror}") from None
    _say(
        f"manifest {manifest.federation} v{manifest.version}: {len(members)} members, up to "
        f"{colluding} colluding; fingerprint {manifest.fingerprint} (give each site the file "
        "and read them the fingerprint)"
    )
    print(manifest.fingerprint, flush=True)
    return ExitCode.OK


def _check_auth_public_key(path: Path) -> None:
    """The checks `flwr supernode register` makes, before anything is written."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UserError(f"{path} is not an OpenSSH public key: {exc}") from None
    nist = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, nist):
        raise UserError(
            f"{path} is not an ECDSA NIST-curve key (make one with `{PROG} site-auth-key`)"
        )


def _enroll(args: argparse.Namespace) -> int:
    from fedseal.registry import RecordConflict, RegistryError

    from .node_auth import (
        NodeAuthError,
        NodeKeyInUse,
        recorded_node,
        register_node,
        remember_node,
        unregister_node,
    )

    bundle = _read_site_keys(args.keys, args.site)
    state = _state_dir(args)
    home, known = None, None
    if args.auth_public_key is not None:
        _check_auth_public_key(args.auth_public_key)
        home = _checked_flwr_home(args)
        try:
            known = recorded_node(state, args.site, args.auth_public_key)
        except NodeAuthError as exc:
            raise UserError(str(exc)) from None
    with _open(args, writing=True) as registry:
        try:
            before = len(registry.events(site=args.site))
            registry.enroll_site(args.site, bundle)
            changed = len(registry.events(site=args.site)) > before
        except (RecordConflict, ValueError) as exc:
            raise UserError(str(exc)) from None
        except RegistryError as exc:
            raise UserError(f"registry: {exc}") from None
    if changed:
        _say(f"enrolled site {args.site} in the registry (site_enrolled event recorded)")
    else:
        _say(f"site {args.site} is already enrolled with these keys; nothing changed")
    if args.auth_public_key is None:
        return ExitCode.OK
    assert home is not None
    try:
        node_id = register_node(args.auth_public_key, args.connection, args.site, home)
    except NodeAuthError as exc:
        if known is not None and isinstance(exc, NodeKeyInUse):
            _say(
                f"site {args.site}'s SuperNode key is already registered with Flower "
                f"as node {known}"
            )
            return ExitCode.OK
        raise UserError(
            f"site {args.site} is enrolled in the registry, but its SuperNode key was not "
            f"registered with Flower: {exc}",
            ExitCode.CHILD_FAILED,
        ) from None
    try:
        previous = recorded_node(state, args.site)
    except NodeAuthError:
        previous = None
    remember_node(state, args.site, node_id, args.auth_public_key)
    _say(f"registered site {args.site}'s SuperNode key with Flower as node {node_id}")
    if previous is not None and previous != node_id:
        # A new key for the site: the old one must stop working (key rotation).
        try:
            unregister_node(previous, args.connection, home)
        except NodeAuthError as exc:
            raise UserError(
                f"site {args.site}'s new SuperNode key is registered, but its previous one "
                f"(Flower node {previous}) is still accepted: {exc}; run `flwr supernode "
                f"unregister {previous} {args.connection}`",
                ExitCode.CHILD_FAILED,
            ) from None
        _say(f"unregistered site {args.site}'s previous SuperNode key (Flower node {previous})")
    return ExitCode.OK


def _revoke(args: argparse.Namespace) -> int:
    from fedseal.registry import RecordConflict, RecordNotFound, RegistryError

    from .node_auth import NodeAuthError, forget_node, recorded_node, unregister_node

    state = _state_dir(args)
    try:
        node_id = args.node_id if args.node_id is not None else recorded_node(state, args.site)
    except NodeAuthError as exc:
        raise UserError(str(exc)) from None
    with _open(args, writing=True) as registry:
        try:
            registry.revoke_site(args.site, args.reason)
        except RecordNotFound:
            raise UserError(f"no site called {args.site} in the registry") from None
        except RecordConflict as exc:
            _say(f"{exc}; nothing changed in the registry")
        except ValueError as exc:
            raise UserError(str(exc)) from None
        except RegistryError as exc:
            raise UserError(f"registry: {exc}") from None
        else:
            _say(f"revoked site {args.site} in the registry (site_revoked event recorded)")
    if node_id is None:
        return ExitCode.OK
    home = _flwr_home(args)
    if home is None:
        _say(
            f"Flower node {node_id} of site {args.site} is still registered; give --flwr-home "
            f"or run `flwr supernode unregister {node_id} {args.connection}`"
        )
        return ExitCode.OK
    try:
        unregister_node(node_id, args.connection, home)
    except NodeAuthError as exc:
        raise UserError(
            f"site {args.site} is revoked in the registry, but Flower node {node_id} was not "
            f"unregistered: {exc}",
            ExitCode.CHILD_FAILED,
        ) from None
    forget_node(state, args.site)
    _say(f"unregistered Flower node {node_id} of site {args.site}")
    return ExitCode.OK


def _start_run(args: argparse.Namespace) -> int:
    from fedseal.models.data import get_scenario, load_federated_dataset, scenario_site_names
    from fedseal.registry import RegistryError

    from .flower_app import CONNECTION_NAME, SubmitError, flower_run_status
    from .run_launch import (
        LaunchError,
        LaunchTimeout,
        follow_run,
        launch_run,
        running_run,
        submit_recorded,
    )
    from .run_settings import default_run_config

    regime = REGIMES[AdapterKind(args.adapter)]
    args.rounds = regime.rounds if args.rounds is None else args.rounds
    args.steps = regime.steps if args.steps is None else args.steps
    for name, value in (("--rounds", args.rounds), ("--steps", args.steps)):
        if value < 1:
            raise UserError(f"{name} must be at least 1")
    if args.connection != CONNECTION_NAME:
        raise UserError(f"start-run submits on the connection {CONNECTION_NAME!r} only")
    home = _checked_flwr_home(args)
    try:
        scenario = get_scenario(args.scenario)
    except (KeyError, ValueError) as exc:
        raise UserError(str(exc)) from None
    state = _state_dir(args)
    url = _database_url(args)
    with _open(args, writing=True) as registry:
        try:
            enrolled = len(registry.site_public_keys())
        except RegistryError as exc:
            raise UserError(f"registry: {exc}") from None
        min_sites = args.min_sites if args.min_sites is not None else enrolled
        if min_sites < 1:
            raise UserError("no site is enrolled: enrol sites first (`fl-coordinator enroll`)")
        # The class labels come from the scenario (its label set, not any site's records).
        try:
            scenario_site_names(args.scenario, min_sites)  # checks the number of sites
            labels = load_federated_dataset(args.scenario, min_sites, args.seed).labels
        except ValueError as exc:
            raise UserError(str(exc)) from None
        resume_run = 0
        if args.resume:
            interrupted = running_run(registry)
            if interrupted is None:
                raise UserError("--resume: no run in the registry is still running")
            resume_run = int(interrupted.id)
            _say(
                f"resuming run {resume_run}: {interrupted.rounds_completed} of "
                f"{interrupted.rounds_planned} rounds completed; the round in flight is "
                "recorded as aborted"
            )
        run_config = default_run_config(
            database_url=url,
            scenario=args.scenario,
            labels=list(labels),
            rounds=args.rounds,
            min_sites=min_sites,
            steps=args.steps,
            learning_rate=regime.learning_rate,
            clip=regime.clip,
            adapter=str(regime.adapter),
            seed=args.seed,
            round_timeout=args.round_timeout,
            max_length=scenario.max_length,
            mode=args.mode,
            coordinator_state=str(state.resolve()),
            resume_run=resume_run,
        )
        run_config["max-colluding"] = args.max_colluding
        try:
            launch = launch_run(registry, state, run_config, home, new=args.new or args.resume)
        except LaunchError as exc:
            raise UserError(str(exc), ExitCode.CHILD_FAILED) from None
        verb = "following the unfinished" if launch.resumed else "submitted"
        _say(f"{verb} Flower run {launch.flower_run_id} ({args.mode}, {args.rounds} rounds)")
        if not args.wait:
            return ExitCode.OK

        def resubmit(run_id: int) -> int:
            return submit_recorded(state, {**run_config, "resume-run": run_id}, home)

        try:
            run = follow_run(
                registry,
                launch.flower_run_id,
                timeout_s=args.timeout,
                report=_say,
                flower_status=lambda flower_run_id: flower_run_status(flower_run_id, home),
                resubmit=resubmit if args.max_resumes > 0 else None,
                max_resumes=args.max_resumes,
            )
        except SubmitError as exc:
            raise UserError(str(exc), ExitCode.CHILD_FAILED) from None
        except LaunchError as exc:
            code = ExitCode.UNREACHABLE if isinstance(exc, LaunchTimeout) else ExitCode.FAILURE
            raise UserError(str(exc), code) from None
    from fedseal.registry.statuses import RunStatus

    _say(f"run {run.id} {run.status}" + (f": {run.error}" if run.error else ""))
    return ExitCode.OK if run.status == RunStatus.COMPLETED else ExitCode.FAILURE


def _status(args: argparse.Namespace) -> int:
    from fedseal.registry import RecordNotFound, RegistryError

    from .status_report import collect_status, render_status

    with _open(args, writing=False) as registry:
        try:
            report = collect_status(registry, args.run)
        except RecordNotFound as exc:
            raise UserError(str(exc)) from None
        except RegistryError as exc:
            raise UserError(f"registry: {exc}") from None
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True), flush=True)
    else:
        print(render_status(report), flush=True)
    return ExitCode.OK


_COMMANDS = {
    "init-pki": _init_pki,
    "site-auth-key": _site_auth_key,
    "enroll": _enroll,
    "manifest": _write_manifest,
    "revoke": _revoke,
    "start-run": _start_run,
    "status": _status,
}


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
