"""The documentation says what the code does (issue #10, items 12 and 13; issue #21, item 7).
Facts, not phrasings: every `avel ...` command in a code block parses with the real CLI,
every option of every command is named somewhere, relative links resolve, the README is
short and starts with CI's command, the localize output schemas are the keys the code
writes, the DAM choices documented are the defaults of the model configs, and every CML figure
quoted is labelled with its direction (A2V: audio query -> visual window; V2A: visual
query -> audio window), never by its position in a pair."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import typer

from avel.models.registry import model_config

ROOT = Path(__file__).resolve().parents[1]
README_PATH = ROOT / "README.md"
DOCS = ROOT / "docs"
RESEARCH_LOG = ROOT / "benchmarks" / "results" / "learning_curves" / "README.md"
PAGES = [README_PATH] + sorted(DOCS.glob("*.md"))  # what a user reads: the README and docs/*.md
LINKED_PAGES = PAGES + [RESEARCH_LOG, ROOT / "benchmarks" / "README.md"]
README = README_PATH.read_text(encoding="utf-8")
MODELS = (DOCS / "models.md").read_text(encoding="utf-8")
LOCALIZATION = (DOCS / "localization.md").read_text(encoding="utf-8")
# the DAM paper's Table 1 (its text agrees; its Table 3 prints DAM's pair in the other order)
PUBLISHED_CML = {"47.1": "A2V", "48.5": "V2A", "35.6": "A2V", "44.8": "V2A"}
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", flags=re.M | re.S)
SHELL_BLOCKS = ("", "bash", "sh", "shell", "console")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def section(text: str, title: str) -> str:
    """The text from the heading `title` to the next heading of the same level (code blocks
    skipped), whitespace-normalised."""
    m = re.search(rf"^(#+) {re.escape(title)}\n", text, flags=re.M)
    assert m, f"no section {title!r}"
    level = len(m.group(1))
    rest = FENCE.sub(lambda b: "", text[m.end() :])
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return " ".join(rest[: end.start() if end else None].split())  # one line, single spaces


def bullet(text: str, start: str) -> str:
    """The bullet (within `text`, whitespace-normalised) that begins with `start`."""
    i = text.find("- " + start)
    assert i >= 0, f"no bullet starting with {start!r}"
    j = text.find(" - ", i + 2)
    return text[i : j if j >= 0 else None]


def blocks(text: str, *languages: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang in languages]


# ---------------------------------------------------------------------------------------
# the CLI as the docs show it
def documented_commands():
    """(page, line, argv after `avel`) for every avel command in the shell blocks: `\\`
    continuations joined, comments dropped, a line split at `&&`, `;` and `|`; a word that
    ends in `...` (a placeholder: VIDEO...) is left out."""
    found = []
    for page in PAGES:
        for body in blocks(page.read_text(encoding="utf-8"), *SHELL_BLOCKS):
            for line in body.replace("\\\n", " ").splitlines():
                if not re.search(r"(^|&&|;|\|)\s*(\S*/)?avel\s", line):
                    continue  # not a shell line that runs avel (a file layout, a schema)
                words = shlex.split(line, comments=True)
                command: list[str] = []
                for w in words + ["&&"]:
                    if w in ("&&", "||", ";", "|"):
                        if command and Path(command[0]).name == "avel":
                            found.append((rel(page), line.strip(), [a for a in command[1:] if not a.endswith("...")]))
                        command = []
                    else:
                        command.append(w)
    return found


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def cli():
    from avel.cli import app

    return typer.main.get_command(app)


def cli_commands(group):
    """(path, command) of every command under `group`, the group itself included."""
    out = [((), group)]
    for name, sub in getattr(group, "commands", {}).items():
        out += [((name,) + p, c) for p, c in cli_commands(sub)]
    return out


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 20 and {args[0] for _, _, args in COMMANDS if args} >= {
        "extract",
        "preprocess",
        "merge",
        "export-ave",
        "train",
        "evaluate",
        "localize",
        "cml",
        "demo",
        "synth",
    }


@pytest.mark.parametrize("page,line,args", COMMANDS, ids=[f"{p}: {line[:60]}" for p, line, _ in COMMANDS])
def test_documented_command_parses(cli, page, line, args):
    """The subcommand exists, every option given is one of its options and takes the value
    given (a choice, a number), no argument is left over and none is missing: the real
    parser, run without running the command."""
    ctx = cli.context_class(cli, info_name="avel")
    command, rest = cli, list(args)
    while hasattr(command, "commands"):
        assert rest, f"{page}: `{line}` names no subcommand"
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"{page}: `{line}`: avel has no command {rest[0]!r}"
        ctx = command.context_class(command, info_name=rest[0], parent=ctx)
        command, rest = sub, rest[1:]
    try:
        command.make_context(ctx.info_name, rest, parent=ctx.parent)
    except Exception as e:  # the parser's usage errors
        pytest.fail(f"{page}: `{line}`: {type(e).__name__}: {e}")


def test_the_parse_check_can_fail(cli):
    sub = cli.get_command(cli.context_class(cli, info_name="avel"), "extract")
    with pytest.raises(Exception, match="--no-such-option"):
        sub.make_context("extract", ["a.mp4", "--no-such-option", "1"])
    with pytest.raises(Exception, match="fp8"):  # click's BadParameter (typer bundles its own click)
        sub.make_context("extract", ["a.mp4", "--precision", "fp8"])


def test_every_option_of_every_command_is_documented(cli):
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    missing = []
    for path, command in cli_commands(cli):
        for param in command.params:
            if param.param_type_name != "option" or getattr(param, "hidden", False):
                continue
            names = [o for o in param.opts + param.secondary_opts if o.startswith("--") and o != "--help"]
            if names and not any(re.search(re.escape(o) + r"(?![\w-])", text) for o in names):
                missing.append(f"avel {' '.join(path)} {'/'.join(names)}")
    assert not missing, f"options no page of README.md or docs/ names: {missing}"


# ---------------------------------------------------------------------------------------
# the pages themselves
def links(text: str) -> list[str]:
    text = FENCE.sub("", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", LINKED_PAGES, ids=rel)
def test_relative_links_point_to_files(page):
    targets = [t for t in links(page.read_text(encoding="utf-8")) if not re.match(r"[a-z]+:", t)]
    broken = [t for t in targets if not (page.parent / t.split("#")[0]).resolve().exists()]
    assert not broken, f"{rel(page)}: links to nothing: {broken}"


@pytest.mark.parametrize("page", LINKED_PAGES, ids=rel)
def test_module_paths_named_exist(page):
    """A path of the package written in the docs (`pipeline/media/decode.py`, `core/`) exists."""
    text = page.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:core|extractors|models|pipeline)/[\w/]*(?:\.py)?)`", text))
    named |= set(re.findall(r"\b((?:core|extractors|models|pipeline)/(?:\w+/)*\w+\.py)\b", text))
    assert named or page.name != "architecture.md"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{rel(page)} names files that do not exist: {missing}"


def test_readme_is_short_and_starts_with_ci_command():
    assert len(README.splitlines()) <= 200
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "the README's test command" in ci  # .ci/run says what it runs: the README's second command
    first = FENCE.search(README)
    assert README.index(first.group(0)) == README.index("```"), "the README starts with its commands"
    demo, tests = first.group(2).strip().splitlines()
    assert demo == "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/avel demo"
    assert tests == "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest"
    ci_command = ci.rstrip().splitlines()[-1]
    assert ci_command.replace("pip install -q ", "pip install ") == tests, "CI runs the README's test command"
    assert README.split("\n", 1)[0].startswith("# ") and not README.split("```", 1)[0].count("\n## ")


def test_readme_points_at_the_layer_table_and_every_page():
    assert "tests/test_layers.py" in README and "docs/architecture.md" in README
    linked = {(README_PATH.parent / t).resolve() for t in links(README)}
    for page in sorted(DOCS.glob("*.md")) + [RESEARCH_LOG]:
        assert page.resolve() in linked, f"the README does not link {rel(page)}"


# ---------------------------------------------------------------------------------------
# models.md: the DAM choices are the model configs' defaults; CML figures by direction
def test_cml_matching_is_documented_as_the_default_computes_it():
    dam = section(MODELS, "DAM")
    assert model_config("cml", "dam").scaled_matching and model_config("sel", "dam").scaled_matching
    cml = bullet(dam, "CML width")
    assert "plain dot product" not in cml
    assert "sqrt(d)" in cml and "--unscaled-matching" in cml
    score = bullet(dam, "Matching score")
    assert "sqrt(d)" in score and "by default" in score and "CML" in score and "SEL" in score


def test_recurrent_embeddings_are_documented_as_the_mean_of_their_outputs():
    dam = section(MODELS, "DAM")
    assert re.search(
        r"[Rr]ecurrent embeddings[^.]*\. [^.]*mean of (their|its) outputs over the masked segments", dam
    ), "models.md must say that the recurrent embeddings average their outputs over the masked segments"


def test_sel_dam_defaults_are_documented():
    sel = model_config("sel", "dam")
    dam = section(MODELS, "DAM")
    recipe = bullet(dam, "SEL DAM's training recipe")
    for flag, value in (
        ("--warmup", sel.warmup),
        ("--segment-loss", sel.segment_loss),
        ("--relevance-smoothing", sel.relevance_smoothing),
        ("--input-dropout", sel.input_dropout),
    ):
        m = re.search(rf"`{flag} ([\d.]+)`", recipe)
        assert m and float(m.group(1)) == value, f"{flag} {value:g} is the default"
    assert sel.relevance_fusion == "geometric" and "`--relevance-fusion geometric`" in dam
    assert model_config("wsel", "dam").relevance_fusion == "mean"


@pytest.mark.parametrize("value,direction", sorted(PUBLISHED_CML.items()))
def test_published_cml_figures_are_labelled_by_direction(value, direction):
    seen = 0
    for page in LINKED_PAGES:
        text = " ".join(page.read_text(encoding="utf-8").split())
        for m in re.finditer(re.escape(value), text):
            i = m.start()
            labels = re.findall(r"\b(A2V|V2A)\b", text[max(0, i - 12) : i])
            assert labels and labels[-1] == direction, (
                f"{rel(page)}: {value} must be labelled {direction}: ...{text[i - 40 : i + 10]}..."
            )
            seen += 1
    assert seen, f"no page quotes {value}"


@pytest.mark.parametrize("page", LINKED_PAGES, ids=rel)
def test_no_positional_direction_pairs(page):
    # "A2V / V2A ... x / y" makes the reader match positions; every figure gets its own label
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"A2V\s*/\s*V2A", text)
    assert not re.search(r"\d+\.\d+\s*/\s*\d+\.\d+\)", text)


# ---------------------------------------------------------------------------------------
# localization.md: the schemas are what `avel localize` writes
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """`avel localize --json --csv` on a generated 3-s clip with a random-weight SEL DAM
    checkpoint (tests/test_localize.py's recipe): the files and the table the code writes."""
    from mediagen import tone, write_video

    from avel.cli import main
    from avel.core.config import FeatureSettings
    from avel.extractors.registry import random_weights_tag
    from avel.models.registry import build_model
    from avel.pipeline.train.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("docs_localize")
    video = write_video(d / "clip.mp4", duration_s=3, fps=2, audio=tone(440))
    settings = FeatureSettings(
        visual_model="random",
        audio_model="random",
        frames_per_segment=1,
        frame_size=64,
        segments=10,
        visual_weights_sha256=random_weights_tag(0),
        audio_weights_sha256=random_weights_tag(0),
    )
    torch.manual_seed(0)
    cfg = model_config("sel", "dam", num_classes=3)
    ckpt = save_checkpoint(d / "sel.safetensors", build_model(cfg), cfg, ["alpha", "beta"], settings, {})
    return d, video, ckpt, main


@pytest.fixture(scope="module")
def localized(written):
    d, video, ckpt, main = written
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "localize",
                str(video),
                "--checkpoint",
                str(ckpt),
                "--device",
                "cpu",
                "--json",
                str(d / "out.json"),
                "--csv",
                str(d / "out.csv"),
            ]
        )
    assert code in (0, None)
    with open(d / "out.csv", newline="") as f:
        rows = list(csv.reader(f))
    return json.loads((d / "out.json").read_text()), rows, out.getvalue()


def documented_json() -> dict[str, list[str]]:
    """The localize JSON schema of localization.md: top-level key -> the keys nested in it
    (a top-level key starts a line indented by two spaces; `# ...` are comments)."""
    [body] = [b for b in blocks(LOCALIZATION, "text") if '"segments"' in b]
    keys: dict[str, list[str]] = {}
    current = None
    for line in body.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line)
        top = re.match(r'^  "(\w+)":', line)
        if top:
            current = top.group(1)
            keys[current] = re.findall(r'"(\w+)":', line[top.end() :])
        elif current is not None:
            keys[current] += re.findall(r'"(\w+)":', line)
    return keys


def test_json_schema_is_what_localize_writes(localized):
    [doc] = localized[0]  # one video given: an array of one object
    documented = documented_json()
    assert list(documented) == list(doc), "the top-level keys, in the order written"
    assert documented["segments"] == list(doc["segments"][0])
    assert documented["summary"] == list(doc["summary"])
    assert documented["model"] == list(doc["model"])
    from avel.pipeline.apps.windows import Event

    event = doc["events"][0] if doc["events"] else Event(0, 1, "alpha", 0.5).to_dict()
    assert documented["events"] == list(event)
    assert documented["features"] == [] and isinstance(doc["features"], dict)
    assert documented["error"] == documented["error_kind"] == [] and doc["error"] is None


def test_csv_schema_is_what_localize_writes(localized):
    _, rows, _ = localized
    [body] = blocks(LOCALIZATION, "csv")
    header, *examples = [r for r in csv.reader(body.strip().splitlines())]
    assert header == rows[0]
    assert len(rows) == 1 + 3 and all(len(r) == len(header) for r in examples + rows)


def test_table_is_what_localize_prints(localized):
    """The header lines of the documented table are those `avel localize` prints (an event
    added to the real result for the events' header, which a random model may not give)."""
    from avel.pipeline.apps.outputs import format_table
    from avel.pipeline.apps.windows import Event

    [doc], _, printed = localized
    [body] = [b for b in blocks(LOCALIZATION, "text") if "whole seconds;" in b]
    documented = [line.split() for line in body.splitlines()]
    result = _reload(doc)
    with_event = dataclasses.replace(result, events=[Event(0, 1, "alpha", 0.5)])
    headers = [
        line.split() for line in (printed + "\n" + format_table(with_event)).splitlines() if "label" in line.split()
    ]
    assert {tuple(h) for h in headers} == {tuple(h) for h in documented if "label" in h}
    title = printed.splitlines()[0]
    assert re.match(r".+  \(\d+\.\d\d s, \d+ whole seconds; sel/dam, window \d+ s, stride \d+ s\)$", title)
    assert re.match(
        r".+  \(\d+\.\d\d s, \d+ whole seconds; sel/dam, window \d+ s, stride \d+ s\)$", body.splitlines()[0]
    )


def _reload(doc: dict):
    """The written JSON back as the dataclasses format_table takes."""
    from avel.pipeline.apps.outputs import ModelInfo, SecondResult, VideoLocalization
    from avel.pipeline.apps.windows import Event

    model = dict(doc["model"], classes=tuple(doc["model"]["classes"]))
    return VideoLocalization(
        video=doc["video"],
        duration_s=doc["duration_s"],
        segments=[SecondResult(**s) for s in doc["segments"]],
        events=[Event(**e) for e in doc["events"]],
        model=ModelInfo(**model),
        features=doc["features"],
        error=doc["error"],
        error_kind=doc["error_kind"],
    )


def test_python_api_table_is_avels_public_names():
    import avel

    api = LOCALIZATION[LOCALIZATION.index("## Python API") :]
    rows = [line for line in api.splitlines() if line.startswith("| `")]
    documented = {n for row in rows for n in re.findall(r"`(\w+)`", row.split(" | ")[0])}
    assert documented == set(avel.__all__)
