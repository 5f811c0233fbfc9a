"""Command line: a thin layer that parses arguments, calls the library, prints.

Exit codes (also in the README): 0 success, 1 internal error, 2 usage error,
3 input error, 4 too many bad records (--max-bad-ratio), 5 store error, 6 engine
error, 7 remote error, 130 interrupted, 143 terminated (SIGTERM).
Errors a user can fix are printed as one line on stderr, never as a stack trace.
"""

from __future__ import annotations

import argparse
import errno
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillguard import __version__
from distillguard.errors import (
    EXIT_CODES,
    INTERNAL,
    INTERRUPTED,
    OK,
    STORE,
    TERMINATED,
    USAGE,
    BadRatioError,
    DistillguardError,
    InputError,
    Interrupted,
    RemoteError,
    Terminated,
    UsageError,
    committed,
    forget_stops,
    on_signal,
    stop_asked,
    stop_here,
)

_ending: list[bool] = []  # the command has returned: a signal now changes nothing


def main(argv: Sequence[str] | None = None, *, program: bool = False) -> int:
    """Run one command; its exit code. With `program` the process ends with it (the
    `distillguard` program): signals are then ignored rather than the previous handlers
    put back, so one that comes while the interpreter exits cannot replace the code."""
    _ending.clear()
    forget_stops()
    previous = {  # first: building the parser imports the adapters (pyarrow, pandas)
        signal.SIGTERM: on_signal(signal.SIGTERM, _terminate),
        signal.SIGINT: on_signal(signal.SIGINT, _interrupt),
    }
    args = None
    try:
        args = build_parser().parse_args(argv)
        result: int = args.handler(args)
        return result
    except DistillguardError as exc:
        print(f"distillguard: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return OK
    except (KeyboardInterrupt, Interrupted):
        return _interrupted()
    except Terminated:
        return _terminated()
    except Exception as exc:
        return _failed(exc, args)
    finally:
        _ending.append(True)
        for signum, handler in previous.items():
            on_signal(signum, signal.SIG_IGN if program else handler)
        forget_stops()  # a caller's next command starts unasked


def _failed(exc: Exception, args: argparse.Namespace | None) -> int:
    """An error not of our kind: a stop or a limit that a library reported in its own
    words (DuckDB's 'query interrupted', a full disk, DuckDB out of memory), else a bug,
    shown with the code that says so."""
    if stop_asked() is not None:
        return _terminated() if stop_asked() is Terminated else _interrupted()
    full = _disk_full(exc)
    if full is not None:
        filename = getattr(full, "filename", None)
        where = f" writing {filename}" if filename else ""
        print(
            f"distillguard: error: no space left on the disk{where}: free some, or point "
            "TMPDIR (scratch) or the output at a larger disk; nothing was committed",
            file=sys.stderr,
        )
        return STORE
    limit = getattr(args, "memory_limit", None)
    if _out_of_memory(exc) and limit:
        print(
            f"distillguard: error: DuckDB ran out of memory within --memory-limit "
            f"{limit}: raise it; nothing was committed",
            file=sys.stderr,
        )
        return USAGE
    import traceback

    traceback.print_exc()
    print("distillguard: internal error; please report it with the command line", file=sys.stderr)
    return INTERNAL


FULL_DISK = (  # in a library's own words: DuckDB writing a file, or spilling to TMPDIR
    "No space left on device",
    "Disk quota exceeded",
    "File too large",
    "max_temp_directory_size",
)


def _disk_full(exc: BaseException | None) -> BaseException | None:
    """The error saying the disk (or the user's quota, or file-size limit) is full: an
    OSError, or DuckDB's own in its words (not any error quoting them: a value, a prompt)."""
    duckdb = sys.modules.get("duckdb")
    own = (duckdb.IOException, duckdb.OutOfMemoryException) if duckdb else ()
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return exc
        if isinstance(exc, (OSError, *own)) and any(words in str(exc) for words in FULL_DISK):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _out_file(out: str, *reads: str | Path | None) -> None:
    """Check an --out file before any work, and make its folder. Refused: a folder, a
    file in a store, and a file the command reads (a slip of the keyboard would replace
    the accounts it scores or the findings it reports on). A folder read stands for the
    findings' and the simulator's files in it."""
    from distillguard.detect.inputs import not_among_logs
    from distillguard.schema import FINDINGS_FILES, SIMULATION_FILES
    from distillguard.store import in_store

    target = Path(out).resolve()
    if target.is_dir():
        raise UsageError(f"--out {out} is a folder: give the name of the file to write")
    if in_store(target):
        raise UsageError(f"--out {out} is inside a store: write it elsewhere")
    names = {*FINDINGS_FILES, *SIMULATION_FILES}
    for read in reads:
        if read is None:
            continue
        path = Path(read)
        files = [path / name for name in names] if path.is_dir() else [path]
        if target in {f.resolve() for f in files}:
            raise UsageError(f"--out {out} is a file this command reads: write it elsewhere")
    if target.suffix == ".parquet":
        not_among_logs("--out", Path(out))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot make its folder ({exc.strerror})") from None


def _terminate(signum: int, frame: object) -> None:
    if not _ending:
        stop_here(Terminated)


def _interrupt(signum: int, frame: object) -> None:
    if not _ending:
        stop_here(KeyboardInterrupt)


def _terminated() -> int:
    print(f"distillguard: terminated; {_what_was_committed()}", file=sys.stderr)
    return TERMINATED


def _interrupted() -> int:
    print(f"distillguard: interrupted; {_what_was_committed()}", file=sys.stderr)
    return INTERRUPTED


def _what_was_committed() -> str:
    if committed():
        return "what it committed before stopping is whole"
    return "nothing was committed"


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether `exc` is DuckDB's, out of memory within the limit it was given (raised as
    its own exception, or as an OSError through an Arrow stream it feeds)."""
    duckdb = sys.modules.get("duckdb")
    while exc is not None and duckdb is not None:
        if isinstance(exc, duckdb.OutOfMemoryException) or (
            isinstance(exc, OSError) and str(exc).startswith("Out of Memory Error")
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="distillguard",
        description="Find distillation campaigns in LLM-API traffic.",
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"distillguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser(
        "ingest",
        help="read log files into a canonical store",
        description="Read log files (or folders of them) into a store. "
        "The format of each file is detected from its content.",
    )
    ingest.add_argument("paths", nargs="+", help="log files or folders")
    ingest.add_argument("--store", required=True, help="store folder (created if missing)")
    ingest.add_argument(
        "--format",
        dest="input_format",
        metavar="NAME",
        help="input format, overriding detection: " + ", ".join(_formats()),
    )
    ingest.add_argument(
        "--table",
        default="exchanges",
        choices=["exchanges", "accounts"],
        help="which canonical table the files fill (default: exchanges)",
    )
    ingest.add_argument("--map-file", help="YAML file mapping canonical columns to source fields")
    ingest.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=FIELD",
        help="map a canonical column to a (dotted) source field; repeatable",
    )
    ingest.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="fill a column where the source leaves it empty; repeatable",
    )
    ingest.add_argument(
        "--hmac-key-file",
        help="pseudonymise identifiers and addresses with HMAC-SHA256 under the key in this file",
    )
    ingest.add_argument(
        "--max-bad-ratio",
        type=float,
        metavar="R",
        help="exit with code 4 when more than this share of records is quarantined",
    )
    ingest.add_argument(
        "--memory-limit", default="512MB", help="DuckDB memory limit (default 512MB)"
    )
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(handler=_ingest)

    inspect = commands.add_parser(
        "inspect",
        help="describe a store or a log file",
        description="Describe a store, or how a log file would map.",
    )
    inspect.add_argument("path", help="a store folder or a log file")
    inspect.add_argument(
        "--format", choices=["text", "json"], default="text", help="output format (default text)"
    )
    inspect.add_argument("--json", action="store_true", help="same as --format json")
    inspect.set_defaults(handler=_inspect)
    simulate = commands.add_parser(
        "simulate",
        help="write labelled simulated traffic",
        description="Generate labelled traffic: legitimate "
        "populations and campaigns, in the canonical schema.",
    )
    simulate.add_argument(
        "--scenario",
        required=True,
        help="a preset (demo, evasive, mixed-proxy, hard-negatives, lone-harvesters, "
        "alibaba-2026) or a scenario YAML file",
    )
    simulate.add_argument("--out", required=True, help="output folder")
    simulate.add_argument("--seed", type=int, help="override the scenario's seed")
    simulate.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every account count (e.g. 0.01 for a quick run)",
    )
    simulate.add_argument("--days", type=int, help="override the number of days")
    simulate.add_argument("--corpus", help="folder of JSONL prompt sets to draw real text from")
    simulate.add_argument("--formats", default="", help="also write product logs: otel,litellm")
    simulate.add_argument("--json", action="store_true", help="print the summary as JSON")
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    simulate.set_defaults(handler=_simulate)

    detect = commands.add_parser(
        "detect",
        help="find campaigns in traffic",
        description="Find campaigns: link accounts by shared evidence, score the linked "
        "groups, write findings.",
    )
    detect.add_argument("input", help="a store, a simulator output folder or Parquet files")
    detect.add_argument("--out", required=True, help="findings folder")
    detect.add_argument("--accounts", help="accounts table (Parquet) with sign-up data")
    detect.add_argument(
        "--since",
        help="only exchanges from this time on (ISO 8601); files wholly before it are "
        "not read, so a nightly run can cover the last N days of a long store",
    )
    detect.add_argument("--until", help="only exchanges before this time (ISO 8601)")
    detect.add_argument(
        "--fpr",
        type=float,
        default=0.001,
        help="target false-positive rate for legitimate accounts (default 0.001); the "
        "threshold is estimated from the linked groups in the traffic",
    )
    detect.add_argument(
        "--trusted-channel",
        action="append",
        default=[],
        metavar="CHANNEL",
        help="a sign-up channel whose accounts the operator vouches for (a vetted research "
        "programme), repeatable or comma-separated: its accounts signed up outside a burst, "
        "a week or more before their first exchange, are never flagged, and those that "
        "scored as a campaign are listed for review; needs the accounts table",
    )
    detect.add_argument(
        "--memory-limit", default="1GB", help="engine memory limit (Spark: driver memory)"
    )
    detect.add_argument(
        "--workers", type=int, help="processes for content features (default: one per core)"
    )
    detect.add_argument(
        "--cache",
        metavar="DIR",
        help="keep the digests of input files here; a later run over the same input "
        "re-reads only new or changed files (one cache per input)",
    )
    detect.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default="duckdb",
        help="duckdb (one machine, default) or spark (needs distillguard[spark])",
    )
    detect.add_argument("--spark-master", help="Spark master URL (default local[N], N = --workers)")
    detect.add_argument(
        "--spark-scratch",
        metavar="URI",
        help="where Spark writes intermediate files; on a cluster, storage every "
        "executor reaches (hdfs://..., s3a://...)",
    )
    detect.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting, repeatable (e.g. spark.executor.memory=8g)",
    )
    detect.add_argument("--json", action="store_true", help="print the summary as JSON")
    detect.add_argument("--quiet", action="store_true", help="no line on stderr as each stage ends")
    detect.set_defaults(handler=_detect)

    risk = commands.add_parser(
        "signup-risk",
        help="score new accounts from sign-up data",
        description="Score accounts from sign-up data alone (bursts per channel, e-mail "
        "domains, card reuse, sign-up networks) and recommend a verification tier.",
    )
    risk.add_argument("--accounts", required=True, help="accounts (Parquet, CSV or JSONL)")
    risk.add_argument("--out", help="write scores, tiers and reasons here (Parquet)")
    risk.add_argument("--top", type=int, default=10, help="riskiest accounts to list")
    risk.add_argument("--json", action="store_true", help="print the summary as JSON")
    risk.set_defaults(handler=_signup_risk)

    evaluate = commands.add_parser(
        "eval",
        help="measure findings against labels",
        description="Compare detection findings with the ground truth written by `simulate`.",
    )
    evaluate.add_argument("--findings", required=True, help="findings folder")
    evaluate.add_argument("--labels", required=True, help="the simulator's output folder")
    evaluate.add_argument("--series", help="folder of findings per daily cut-off (YYYY-MM-DD)")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.add_argument("--out", help="also write the JSON report to this file")
    evaluate.set_defaults(handler=_evaluate)

    report = commands.add_parser(
        "report",
        help="write the analyst report (one self-contained HTML file)",
        description="Triage table, a section per campaign (activity, capabilities, "
        "account links, infrastructure, example prompts, evidence), flagged sub-streams, "
        "and the evaluation when labels are given.",
    )
    report.add_argument("findings", help="findings folder written by `detect`")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.add_argument("--input", help="the traffic detected on (default: from summary.json)")
    report.add_argument("--labels", help="simulator output folder, for an evaluation section")
    report.add_argument("--redact", action="store_true", help="no prompt text in the report")
    report.set_defaults(handler=_report)

    gateway = commands.add_parser(
        "gateway",
        help="serve an OpenAI/Anthropic-compatible gateway that records, scores and acts",
        description="A reverse proxy in front of a model: records every exchange, scores "
        "accounts online and against batch findings, and applies a policy.",
    )
    gateway.add_argument("--upstream", required=True, help="the model API's base URL")
    gateway.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to serve on")
    gateway.add_argument("--policy", help="policy file (YAML); default: block 0.9+, ...")
    gateway.add_argument("--findings", help="findings folder, reloaded when it changes")
    gateway.add_argument("--record", help="folder for rolling Parquet files of exchanges")
    gateway.add_argument("--redis", help="redis://... to share state between replicas")
    gateway.add_argument("--hmac-key-file", help="key for pseudonymising recorded identifiers")
    gateway.add_argument("--max-body", type=int, default=4 * 2**20, help="largest request, bytes")
    gateway.add_argument(
        "--trust-headers",
        action="store_true",
        help="take the client address from X-Forwarded-For and the time from "
        "X-Distillguard-Timestamp (only behind a trusted proxy, or to replay traffic)",
    )
    gateway.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes serving the port (SO_REUSEPORT); above 1 needs --redis",
    )
    gateway.add_argument(
        "--otel-endpoint",
        help="OTLP/HTTP traces URL (e.g. http://collector:4318/v1/traces): a GenAI span "
        "per exchange, pseudonymised, without text (needs distillguard[otel])",
    )
    gateway.set_defaults(handler=_gateway)

    intel = commands.add_parser(
        "intel",
        help="share findings: STIX 2.1 for peers, OCSF for a SIEM",
        description="Turn findings into what a peer organisation or a SIEM ingests.",
    )
    actions = intel.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write findings as a STIX 2.1 bundle or an OCSF JSON Lines feed",
        description="STIX (default): one bundle of every campaign, private by default: "
        "no prompt text, addresses or raw account identifiers. OCSF: one Detection Finding "
        "per flagged account, for the operator's own SIEM.",
    )
    export.add_argument("findings", help="findings folder written by `detect`")
    export.add_argument("--out", required=True, help="output file")
    export.add_argument("--format", choices=("stix", "misp", "ocsf"), default="stix")
    export.add_argument("--producer", default="distillguard operator", help="your name in STIX")
    export.add_argument(
        "--key-file",
        help="sharing key agreed with peers: accounts, cards and networks as keyed hashes "
        "they can match (without it, cards and networks are left out)",
    )
    export.add_argument("--tlp", default="amber", help="TLP marking: clear, green, amber, red")
    export.add_argument(
        "--include-addresses",
        action="store_true",
        help="also share network ranges as STIX patterns (raw addresses leave)",
    )
    export.set_defaults(handler=_intel_export)
    matcher = actions.add_parser(
        "match",
        help="match a peer's STIX bundle against your traffic",
        description="Which of your accounts and exchanges match which of a peer's "
        "campaigns: by template fingerprints (at least three), or by network and client.",
    )
    matcher.add_argument("bundle", help="the peer's STIX 2.1 bundle (JSON)")
    matcher.add_argument("input", help="your traffic: a store, a simulator folder or Parquet")
    matcher.add_argument("--out", required=True, help="folder for matches.parquet, report.json")
    matcher.add_argument("--key-file", help="the sharing key, to match network tokens")
    matcher.add_argument("--json", action="store_true", help="print the report as JSON")
    matcher.set_defaults(handler=_intel_match)
    for name, helptext in (
        ("push", "publish a STIX bundle to a TAXII 2.1 collection"),
        ("pull", "fetch a TAXII 2.1 collection as a STIX bundle"),
    ):
        taxii = actions.add_parser(
            name, help=helptext, description=helptext + " (password from $TAXII_PASSWORD)."
        )
        if name == "push":
            taxii.add_argument("bundle", help="STIX 2.1 bundle (JSON)")
            taxii.add_argument(
                "--skip-extension-definitions",
                action="store_true",
                help="leave extension-definition objects out (servers such as medallion "
                "3.0 fail on them)",
            )
        else:
            taxii.add_argument("--out", required=True, help="where to write the bundle")
            taxii.add_argument("--added-after", help="only objects added after this time")
        taxii.add_argument("--collection", required=True, help="the collection's URL")
        taxii.add_argument("--user", help="user name for basic authentication")
        taxii.set_defaults(handler=_intel_taxii)
    return parser


def _simulate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from distillguard.simulate import load, simulate
    from distillguard.simulate.export import EXPORTERS
    from distillguard.simulate.scenario import check

    scenario = load(args.scenario)
    if args.seed is not None:
        scenario = replace(scenario, seed=args.seed)
    if args.days is not None:
        scenario = scenario.truncated(args.days)
        check(scenario)
    if args.scale != 1.0:
        scenario = scenario.scaled(args.scale)
        check(scenario)
    formats = tuple(f for f in args.formats.split(",") if f)
    unknown = [f for f in formats if f not in EXPORTERS]
    if unknown:
        raise UsageError(f"--formats takes {', '.join(EXPORTERS)}, not {', '.join(unknown)}")
    if args.corpus and not Path(args.corpus).is_dir():
        raise UsageError(f"--corpus {args.corpus}: not a folder")
    try:
        facts = simulate(
            scenario,
            args.out,
            corpus=args.corpus,
            formats=formats,
            progress=not args.quiet and sys.stderr.isatty(),
        )
    except ValueError as exc:  # an empty corpus, for instance
        raise UsageError(str(exc)) from None
    summary = {
        "scenario": scenario.name,
        "out": args.out,
        "exchanges": facts.exchanges,
        "campaign_exchanges": dict(facts.by_campaign),
        "legitimate_exchanges": dict(facts.by_population),
        "proxied_exchanges": dict(facts.proxied),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{scenario.name}: {facts.exchanges:,} exchanges written to {args.out}")
        for name, n in facts.by_campaign.items():
            print(f"  campaign {name}: {n:,} exchanges ({facts.proxied[name]:,} via resellers)")
        print(f"  legitimate: {sum(facts.by_population.values()):,} exchanges")
    return OK


def _url(flag: str, url: str, schemes: tuple[str, ...]) -> None:
    """Refuse a URL that every worker would fail on: another scheme, no host, a bad port."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        _ = parts.port  # parsing the port is the check
    except ValueError as exc:
        raise UsageError(f"{flag} {url!r}: {exc}") from None
    if parts.scheme not in schemes or not (parts.hostname or parts.scheme == "unix"):
        raise UsageError(f"{flag} takes a {'/'.join(schemes)} URL with a host, not {url!r}")


def _intel_export(args: argparse.Namespace) -> int:
    from distillguard.intel import read_campaigns
    from distillguard.privacy import load_key
    from distillguard.store import atomic_write

    _out_file(args.out, args.findings, args.key_file)
    campaigns = read_campaigns(args.findings)
    if args.format == "ocsf":
        from distillguard.intel.siem import events

        lines = [json.dumps(e, separators=(",", ":")) + "\n" for e in events(campaigns)]
        atomic_write(Path(args.out), "".join(lines).encode())
        print(f"{len(lines)} OCSF Detection Findings in {args.out}")
        return OK
    from distillguard.intel.stix import Sharing, export

    sharing = Sharing(
        producer=args.producer,
        key=load_key(args.key_file) if args.key_file else None,
        include_addresses=args.include_addresses,
        tlp=args.tlp,
    )
    if args.format == "misp":
        from distillguard.intel.misp import events as misp_events

        found = [{"Event": e} for e in misp_events(campaigns, sharing)]
        atomic_write(Path(args.out), json.dumps(found, indent=1).encode())
        print(f"{len(found)} MISP event(s) in {args.out}")
        return OK
    bundle = export(campaigns, sharing)
    atomic_write(Path(args.out), json.dumps(bundle, indent=1).encode())
    print(f"{len(campaigns)} campaign(s), {len(bundle['objects'])} STIX objects in {args.out}")
    return OK


def _gateway(args: argparse.Namespace) -> int:
    from distillguard.gateway import policy
    from distillguard.gateway.server import Config
    from distillguard.gateway.workers import run
    from distillguard.privacy import load_key

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 2**16:
        raise UsageError(f"--listen takes HOST:PORT, not {args.listen!r}")
    _url("--upstream", args.upstream, ("http", "https"))
    if args.redis:
        _url("--redis", args.redis, ("redis", "rediss", "unix"))
    config = Config(
        upstream=args.upstream,
        policy=policy.load(args.policy),
        findings=args.findings,
        record=args.record,
        key=load_key(args.hmac_key_file) if args.hmac_key_file else None,
        redis=args.redis,
        max_body=args.max_body,
        trust_headers=args.trust_headers,
        otel_endpoint=args.otel_endpoint,
    )
    return run(config, host, int(port), args.workers)


def _report(args: argparse.Namespace) -> int:
    from distillguard.report import write_report
    from distillguard.report.data import read_summary

    named = read_summary(Path(args.findings)).get("input")  # the traffic it reads, if not given
    traffic = args.input or (named if isinstance(named, str) else None)
    _out_file(args.out, args.findings, traffic, args.labels)
    count = write_report(args.findings, args.out, args.input, args.labels, args.redact)
    print(f"report of {count} campaign(s) in {args.out}")
    return OK


def _intel_taxii(args: argparse.Namespace) -> int:
    import os

    from distillguard.intel import taxii
    from distillguard.intel.match import read_bundle
    from distillguard.store import atomic_write

    password = os.environ.get("TAXII_PASSWORD")
    _url("--collection", args.collection, ("http", "https"))
    if args.action == "pull":
        _out_file(args.out)
        bundle = taxii.pull(args.collection, args.user, password, args.added_after)
        atomic_write(Path(args.out), json.dumps(bundle, indent=1).encode())
        print(f"{len(bundle['objects'])} objects from {args.collection} in {args.out}")
        return OK
    read_bundle(args.bundle)  # refuse what is not a STIX 2.1 bundle before sending
    bundle = json.loads(Path(args.bundle).read_text(encoding="utf-8"))
    done = taxii.push(bundle, args.collection, args.user, password, args.skip_extension_definitions)
    print(
        f"{len(done.succeeded)} of {len(bundle['objects'])} objects added to {args.collection}"
        + (f"; {done.pending} pending" if done.pending else "")
        + (f"; {len(done.skipped)} extension definitions left out" if done.skipped else "")
    )
    for object_id, reason in done.failed:
        print(f"  refused {object_id}: {reason}", file=sys.stderr)
    if done.failed:
        raise RemoteError(f"the server refused {len(done.failed)} object(s), listed above")
    return OK


def _intel_match(args: argparse.Namespace) -> int:
    from distillguard.intel.match import match_traffic
    from distillguard.privacy import load_key

    key = load_key(args.key_file) if args.key_file else None
    report = match_traffic(args.bundle, args.input, args.out, key)
    if args.json:
        print(json.dumps(report, indent=1))
        return OK
    for cid, found in report["peer_campaigns"].items():
        print(
            f"{found['name']} ({cid}): {len(found['accounts'])} of your accounts, "
            f"{found['exchanges']} exchanges (template {found['by_kind']['template']}, "
            f"network {found['by_kind']['network']})"
        )
    for reason in report["skipped"]:
        print(f"  skipped {reason}")
    print(f"matches in {args.out}")
    return OK


def _stage_line(line: str) -> None:
    """A stage's end on stderr: a nightly run's log shows where it is and what it holds."""
    print(f"distillguard detect: {line}", file=sys.stderr, flush=True)


def _detect(args: argparse.Namespace) -> int:
    from distillguard.detect import detect
    from distillguard.ingest.engine import check_memory_limit

    check_memory_limit(args.memory_limit)
    conf = {}
    for setting in args.spark_conf:
        key, equals, value = setting.partition("=")
        if not equals or not key.strip():
            raise UsageError(f"--spark-conf takes KEY=VALUE, not {setting!r}")
        conf[key.strip()] = value.strip()
    summary = detect(
        args.input,
        args.out,
        accounts=args.accounts,
        since=args.since,
        until=args.until,
        fpr=args.fpr,
        memory_limit=args.memory_limit,
        workers=args.workers,
        engine=args.engine,
        cache=args.cache,
        trusted_channels=[c for given in args.trusted_channel for c in given.split(",")],
        engine_options={"master": args.spark_master, "conf": conf, "scratch": args.spark_scratch}
        if args.engine == "spark"
        else None,
        progress=None if args.quiet else _stage_line,
    )
    if summary["trusted_channels"] and not summary["trusted_accounts"]:
        print(  # a misspelt channel would otherwise look like trust that found nothing
            "distillguard detect: no account is trusted: none of "
            + ", ".join(summary["trusted_channels"])
            + " has one known channel and sign-up time, outside a burst, a week or more "
            "before its first exchange",
            file=sys.stderr,
        )
    if summary["missing_columns"]:
        print(  # a mapping naming a field the logs lack stores an empty column
            "distillguard detect: the input has no value in "
            + ", ".join(summary["missing_columns"])
            + ": the signals that need them were skipped",
            file=sys.stderr,
        )
    matched = summary["accounts_matched"]
    if matched and matched["accounts"] and not matched["in_traffic"]:
        print(
            f"distillguard detect: none of the {matched['accounts']} accounts in the accounts "
            "table is an account of the traffic, so sign-up evidence and trusted channels "
            "saw nothing: are its ids keyed as the store's are? (`distillguard ingest "
            "--table accounts` into the store keys them alike)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(summary, indent=2))
        return OK
    campaigns = json.loads((Path(args.out) / "campaigns.json").read_text())
    print(
        f"{summary['campaigns']} campaign(s); {summary['flagged_accounts']} accounts and "
        f"{summary['flagged_substreams']} sub-streams of mixed accounts flagged; "
        f"findings in {args.out}\n  {summary['calibration']}"
    )
    for group in summary["held_back"]:
        joined = f", beside {group['campaign_id']}" if group["campaign_id"] else ""
        print(
            f"  held back for review: {len(group['accounts'])} account(s) of a trusted "
            f"channel scored {group['score']:.3f}{joined} "
            f"({', '.join(group['evidence'][:3])}); not flagged"
        )
    for c in campaigns:
        mix = ", ".join(f"{k} {v}" for k, v in list(c["capability_mix"].items())[:2])
        top = ", ".join(e["signal"] for e in c["evidence"][:3])
        print(
            f"  {c['id']}  score {c['score']:.3f}  {len(c['accounts'])} accounts  "
            f"{c['exchange_count']} exchanges  {c['first_seen']} .. {c['last_seen']}\n"
            f"      capability: {mix}\n      evidence: {top}\n"
            f"      action: {c['recommended_action']}"
        )
    return OK


def _signup_risk(args: argparse.Namespace) -> int:
    from collections import Counter

    import pyarrow as pa
    import pyarrow.parquet as pq

    from distillguard.signup import TIERS, read_accounts, signup_risk
    from distillguard.store import atomic_write

    if args.out:
        _out_file(args.out, args.accounts)
    scored = signup_risk(read_accounts(args.accounts))
    if args.out:
        sink = pa.BufferOutputStream()
        pq.write_table(scored, sink)
        atomic_write(Path(args.out), sink.getvalue().to_pybytes())
    tiers = Counter(scored.column("tier").to_pylist())
    top = sorted(scored.to_pylist(), key=lambda r: -r["score"])[: max(args.top, 0)]
    summary = {
        "accounts": scored.num_rows,
        "tiers": {name: tiers.get(name, 0) for _, name in TIERS},
        "riskiest": [{k: r[k] for k in ("account_id", "score", "tier", "reasons")} for r in top],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return OK
    print(f"{scored.num_rows:,} accounts" + (f"; scores in {args.out}" if args.out else ""))
    for name, n in summary["tiers"].items():
        print(f"  {name:<34} {n:>8,}")
    for r in summary["riskiest"]:
        reasons = ", ".join(r["reasons"]) or "-"
        print(f"  {r['account_id']}  {r['score']:.3f}  {r['tier']}  ({reasons})")
    return OK


def _evaluate(args: argparse.Namespace) -> int:
    from distillguard.evaluate import evaluate, render

    if args.out:
        series = Path(args.series) if args.series else None  # findings per cut-off
        cuts = sorted(series.iterdir()) if series and series.is_dir() else []
        _out_file(args.out, args.findings, args.labels, *cuts)
    report = evaluate(args.findings, args.labels, args.series)
    if args.out:
        from distillguard.store import atomic_write

        atomic_write(Path(args.out), json.dumps(report, indent=2).encode())
    print(json.dumps(report, indent=2) if args.json else render(report))
    return OK


def _formats() -> list[str]:
    from distillguard.ingest.adapters import FORMATS

    return list(FORMATS)


def _ingest(args: argparse.Namespace) -> int:
    from distillguard.ingest import Options, ingest
    from distillguard.ingest.adapters.mapped import load_mapping, parse_pairs
    from distillguard.privacy import load_key

    if args.max_bad_ratio is not None and not 0 <= args.max_bad_ratio <= 1:
        raise UsageError("--max-bad-ratio takes a share between 0 and 1")
    options = Options(
        format=args.input_format,
        table=args.table,
        mapping=load_mapping(args.map_file, args.map),
        constants=parse_pairs(args.set, "--set"),
        key=load_key(args.hmac_key_file) if args.hmac_key_file else None,
        progress=not args.quiet and sys.stderr.isatty(),
        memory_limit=args.memory_limit,
    )
    summary = ingest(args.paths, args.store, options)
    report = summary.to_dict()
    for column, name in summary.unfilled.items():
        print(  # a mistyped field would otherwise leave the column empty unsaid
            f"distillguard ingest: no record has the mapped field {name!r}, so {column} is "
            "empty in what was stored: is the field's name or path right?",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report)
    if summary.rows_mapped == 0 and summary.quarantined.total():
        raise InputError(f"nothing in the input could be read; see {summary.quarantine_file}")
    if args.max_bad_ratio is not None and summary.bad_ratio > args.max_bad_ratio:
        raise BadRatioError(
            f"{summary.bad_ratio:.2%} of records were quarantined, above "
            f"--max-bad-ratio {args.max_bad_ratio:.2%}; see {summary.quarantine_file}"
        )
    if args.max_bad_ratio is None and summary.bad_ratio == 1:
        common = summary.quarantined.most_common(1)[0][0]
        hint = COMMON_HINTS.get(common, "")
        raise InputError(
            f"every record was quarantined (most as {common}{hint}); see "
            f"{summary.quarantine_file} for why (--max-bad-ratio 1 accepts that)"
        )
    return OK


# What the most common reason for quarantining every record usually means.
COMMON_HINTS = {
    "unrecognised_format": ": the wrong --format, or an accounts table without --table accounts?",
    "missing_field": ": a required column has no value (the wrong --format? --map names its "
    "field, --set gives it one value)",
    "wrong_type": ": the wrong --format or a mapping to the wrong field?",
}


def _print_summary(report: dict[str, Any]) -> None:
    print(
        f"run {report['run_id']}: {len(report['files'])} file(s), "
        f"{report['records_read']} records read"
    )
    for info in report["files"]:
        note = info.get("note") or f"{info['records']} records"
        print(f"  {info['path']}: {info.get('format') or '-'} ({note})")
    print(
        f"stored {report['stored']}, duplicates skipped {report['duplicates_skipped']}, "
        f"quarantined {report['quarantined']} ({report['bad_ratio']:.2%})"
    )
    for reason, n in sorted(report["quarantined_by_reason"].items(), key=lambda kv: -kv[1]):
        print(f"  quarantined {reason}: {n}")
    for reason, n in report["skipped_by_reason"].items():
        print(f"  skipped {reason}: {n}")
    if report["quarantine_file"]:
        print(f"quarantine: {report['quarantine_file']}")


def _inspect(args: argparse.Namespace) -> int:
    from distillguard.inspect import inspect

    report = inspect(args.path)
    if args.json or args.format == "json":
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_tree(report)
    return OK


def _print_tree(value: Any, indent: int = 0) -> None:
    pad = "  " * indent
    for key, item in value.items():
        if isinstance(item, dict) and item:
            print(f"{pad}{key}:")
            _print_tree(item, indent + 1)
        elif isinstance(item, list) and len(item) > 6:
            print(
                f"{pad}{key}: {', '.join(map(str, item[:3]))} … {', '.join(map(str, item[-2:]))} "
                f"({len(item)})"
            )
        else:
            shown = ", ".join(map(str, item)) if isinstance(item, list) else item
            print(f"{pad}{key}: {shown}")


def run() -> None:
    """The `distillguard` program."""
    sys.exit(main(program=True))


if __name__ == "__main__":
    run()
