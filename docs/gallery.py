"""The experiments gallery: pages generated from each experiment's own results.json and plots.

The docs build never runs an experiment. It reads the artifacts committed under
``docs/gallery/<name>/`` (results.json and PNGs), which this script copies from a run's output
directory (``runs/<name>/`` by default), shrinking the plots::

    python -m experiments.quickstart                # full run: writes runs/quickstart/
    python -m docs.gallery --refresh quickstart     # copies it into docs/gallery/quickstart/
    python -m docs.gallery --refresh                # every experiment with a run in runs/

Experiments are discovered as tests/test_experiments.py discovers them (every
``experiments/*.py`` not starting with ``_``). One without artifacts still gets a page that says
how to make them.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "docs" / "gallery"
MAX_PLOT_WIDTH = 1200  # pixels; plots are re-encoded as 256-colour PNGs no wider than this

# The papers whose claims each experiment checks (titles; the docstring says which claim).
PAPERS = {
    "bench_decoding": [
        "Holtzman et al., *The Curious Case of Neural Text Degeneration*, ICLR 2020 (top-p).",
        "Meister, Pimentel, Wiher & Cotterell, *Locally Typical Sampling*, TACL 2023.",
    ],
    "bench_kernels": [
        "Wijmans et al., *Cut Your Losses in Large-Vocabulary Language Models*, ICLR 2025.",
        "Dao et al., *FlashAttention: Fast and Memory-Efficient Exact Attention with "
        "IO-Awareness*, NeurIPS 2022.",
    ],
    "bench_mutual_information": [
        "van den Oord, Li & Vinyals, *Representation Learning with Contrastive Predictive "
        "Coding*, 2018 (InfoNCE).",
        "Kraskov, Stögbauer & Grassberger, *Estimating Mutual Information*, Phys. Rev. E 2004.",
    ],
    "bench_spectral": [
        "Friedman & Dieng, *The Vendi Score: A Diversity Evaluation Metric for Machine "
        "Learning*, TMLR 2023.",
    ],
    "decoding_control": [
        "Basu et al., *Mirostat: A Neural Text Decoding Algorithm that Directly Controls "
        "Perplexity*, ICLR 2021.",
        "Meister, Pimentel, Wiher & Cotterell, *Locally Typical Sampling*, TACL 2023.",
        "Hewitt, Manning & Liang, *Truncation Sampling as Language Model Desmoothing*, "
        "Findings of EMNLP 2022 (eta sampling).",
        "Grave, Joulin & Usunier, *Improving Neural Language Models with a Continuous Cache*, "
        "ICLR 2017.",
    ],
    "mi_staircase": [
        "Poole et al., *On Variational Bounds of Mutual Information*, ICML 2019.",
        "Song & Ermon, *Understanding the Limitations of Variational Mutual Information "
        "Estimators*, ICLR 2020.",
        "Kraskov, Stögbauer & Grassberger, *Estimating Mutual Information*, Phys. Rev. E 2004.",
        "Rosas et al., *Quantifying High-order Interdependencies via Multivariate Extensions "
        "of the Mutual Information*, Phys. Rev. E 2019 (O-information).",
    ],
    "quickstart": [
        "Zhai et al., *Stabilizing Transformer Training by Preventing Attention Entropy "
        "Collapse*, ICML 2023.",
    ],
    "test_time_adaptation": [
        "Wang et al., *Tent: Fully Test-Time Adaptation by Entropy Minimization*, ICLR 2021.",
        "Niu et al., *Efficient Test-Time Model Adaptation without Forgetting*, ICML 2022 (EATA).",
        "Niu et al., *Towards Stable Test-Time Adaptation in Dynamic Wild World*, ICLR 2023 (SAR).",
        "Lee et al., *Entropy is not Enough for Test-Time Adaptation: From the Perspective of "
        "Disentangled Factors*, ICLR 2024 (DeYO).",
        "Wang et al., *Continual Test-Time Domain Adaptation*, CVPR 2022 (CoTTA).",
        "Döbler, Marsden & Yang, *Robust Mean Teacher for Continual and Gradual Test-Time "
        "Adaptation*, CVPR 2023 (RMT).",
        "Liang, Hu & Feng, *Do We Really Need to Access the Source Data? Source Hypothesis "
        "Transfer for Unsupervised Domain Adaptation*, ICML 2020 (SHOT).",
        "Hendrycks & Dietterich, *Benchmarking Neural Network Robustness to Common "
        "Corruptions and Perturbations*, ICLR 2019 (the corruptions).",
    ],
    "attention_collapse": [
        "Zhai et al., *Stabilizing Transformer Training by Preventing Attention Entropy "
        "Collapse*, ICML 2023.",
        "Jha & Reagen, *Entropy-Guided Attention for Private LLMs*, 2025.",
    ],
    "entropy_mechanism": [
        "Cui et al., *The Entropy Mechanism of Reinforcement Learning for Reasoning Language "
        "Models*, 2025.",
    ],
    "score_entropy": [
        "Lou, Meng & Ermon, *Discrete Diffusion Modeling by Estimating the Ratios of the Data "
        "Distribution*, ICML 2024.",
    ],
    "spectral_diversity": [
        "Friedman & Dieng, *The Vendi Score: A Diversity Evaluation Metric for Machine "
        "Learning*, TMLR 2023.",
        "Pasarkar & Dieng, *Cousins of the Vendi Score: A Family of Similarity-Based Diversity "
        "Metrics for Science and Machine Learning*, AISTATS 2024.",
        "Kim et al., *VNE: An Effective Method for Improving Deep Representation by "
        "Manipulating Eigenvalue Distribution*, CVPR 2023.",
        "Liao, Liu et al., *Assessing Neural Network Representations During Training Using "
        "Noise-Resilient Diffusion Spectral Entropy*, 2023.",
    ],
}


def experiments() -> list[str]:
    """Every experiment module, found as tests/test_experiments.py finds them."""
    return sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if not p.stem.startswith("_"))


def docstring(name: str) -> str:
    """The experiment's module docstring, read without importing it."""
    source = (ROOT / "experiments" / f"{name}.py").read_text()
    return ast.get_docstring(ast.parse(source)) or name


def summary_and_body(name: str) -> tuple[str, str]:
    """The docstring's first paragraph on one line, and the rest."""
    summary, _, body = docstring(name).partition("\n\n")
    return " ".join(summary.split()), body


def load(name: str) -> dict | None:
    path = ARTIFACTS / name / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


# ---------------------------------------------------------------------------------------------
# Copying a run's artifacts into docs/gallery/<name>/


def _shrink_png(src: Path, dst: Path) -> None:
    from PIL import Image  # matplotlib's dependency; needed only to refresh

    with Image.open(src) as image:
        image = image.convert("RGB")
        if image.width > MAX_PLOT_WIDTH:
            height = round(image.height * MAX_PLOT_WIDTH / image.width)
            image = image.resize((MAX_PLOT_WIDTH, height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.quantize(256, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
    dst.write_bytes(buffer.getvalue())


def refresh(name: str, run_dir: Path) -> Path:
    """Replaces docs/gallery/<name>/ with run_dir's results.json and (shrunk) plots."""
    results = json.loads((run_dir / "results.json").read_text())
    out = ARTIFACTS / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    plots = []
    for plot in results.get("plots", []):
        src = Path(plot) if Path(plot).exists() else run_dir / Path(plot).name
        _shrink_png(src, out / src.name)
        plots.append(src.name)
    results["plots"] = plots
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return out


# ---------------------------------------------------------------------------------------------
# Pages


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _verdict(claim: dict, quick_run: bool) -> str:
    # A claim not marked quick is meaningless at quick size: its PASS or FAIL is not shown.
    if quick_run and not claim.get("quick", False):
        return "not decided at --quick size"
    return "PASS" if claim["passed"] else "FAIL"


def page(name: str) -> str:
    """MyST source of the experiment's page."""
    summary, body = summary_and_body(name)
    results = load(name)
    command = f"python -m experiments.{name}"
    lines = [f"# `{name}`", "", summary, ""]
    if results is None:
        lines += [
            ":::{note}",
            "No artifacts yet. Make them with",
            f"`{command} && python -m docs.gallery --refresh {name}`.",
            ":::",
            "",
        ]
    elif results.get("quick"):
        lines += [
            ":::{admonition} Quick-run artifacts",
            ":class: warning",
            "These come from the CI smoke run (`--quick`): tiny budgets, so only the claims",
            "marked as decided at that size mean anything. The full run checks every claim at",
            "the paper's scale; its artifacts replace these with",
            f"`{command} && python -m docs.gallery --refresh {name}`.",
            ":::",
            "",
        ]
    seed = results.get("seed", 0) if results else 0
    lines += ["## Reproduce", "", "```bash"]
    if results and results.get("quick"):
        lines.append(f"{command} --quick --seed {seed}  # these artifacts")
    lines += [f"{command} --seed {seed}  # the full run: runs/{name}/results.json and plots"]
    lines += ["```", ""]
    if name in PAPERS:
        lines += ["## Papers", ""] + [f"- {p}" for p in PAPERS[name]] + [""]
    lines += ["## What it checks", "", "```text", body.strip("\n"), "```", ""]
    if results is None:
        return "\n".join(lines)
    quick_run = bool(results.get("quick"))
    lines += [
        "## Claims",
        "",
        "| claim | value | threshold | result | detail |",
        "|---|---:|---:|---|---|",
    ]
    for c in results["claims"]:
        cells = [c["name"], _number(c["value"]), _number(c["threshold"])]
        cells += [_verdict(c, quick_run), c.get("detail", "")]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    lines.append("")
    if results.get("plots"):
        lines += ["## Plots", ""]
        lines += [f"![{name}: {p}](../../gallery/{name}/{p})" for p in results["plots"]]
        lines.append("")
    env = results.get("environment", {})
    rows = {
        "mode": "--quick" if quick_run else "full",
        "seed": results.get("seed"),
        "wall time": f"{results.get('wall_time_s', float('nan')):.0f} s",
        **{k: ", ".join(v) if isinstance(v, list) else v for k, v in env.items()},
    }
    lines += ["## Environment", "", "| | |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows.items()]
    lines.append("")
    if results.get("measured"):
        measured = json.dumps(results["measured"], indent=1)
        lines += ["## Measured", "", "```json", measured, "```", ""]
    return "\n".join(lines)


def index(names: list[str]) -> str:
    lines = [
        "# Experiments gallery",
        "",
        "Each reference experiment reproduces a paper's claims at laptop scale and writes its",
        "claims table and plots; these pages are generated from those files (see",
        "`docs/gallery.py`). Every experiment runs as",
        "`python -m experiments.<name> [--quick] [--out DIR] [--seed N]`.",
        "",
        "| experiment | what | claims passed | mode |",
        "|---|---|---|---|",
    ]
    for name in names:
        results = load(name)
        summary = summary_and_body(name)[0]
        if results is None:
            passed, mode = "no artifacts yet", ""
        else:
            claims = results["claims"]
            if results.get("quick"):
                claims = [c for c in claims if c.get("quick")]
            passed = f"{sum(c['passed'] for c in claims)} / {len(claims)}"
            mode = "--quick" if results.get("quick") else "full"
            if results.get("quick"):
                passed += " decided at --quick size"
        lines.append(f"| [{name}]({name}.md) | {_cell(summary)} | {passed} | {mode} |")
    lines += ["", "```{toctree}", ":hidden:", ""] + names + ["```", ""]
    return "\n".join(lines)


def write_pages(outdir: Path) -> list[str]:
    """Writes outdir/index.md and outdir/<name>.md (only those whose text changed)."""
    outdir.mkdir(parents=True, exist_ok=True)
    names = experiments()
    texts = {"index": index(names), **{n: page(n) for n in names}}
    for stem, text in texts.items():
        path = outdir / f"{stem}.md"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    for stale in set(outdir.glob("*.md")) - {outdir / f"{s}.md" for s in texts}:
        stale.unlink()
    return names


def main(argv: list[str] | None = None) -> int:
    summary = __doc__.split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m docs.gallery", description=summary)
    parser.add_argument(
        "--refresh",
        nargs="*",
        metavar="NAME",
        help="copy runs into docs/gallery/ (no NAME: every experiment with a results.json)",
    )
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="runs directory")
    parser.add_argument(
        "--out", type=Path, help="also write the pages here (the docs build does this itself)"
    )
    args = parser.parse_args(argv)
    if args.refresh is not None:
        names = args.refresh or [n for n in experiments() if (args.runs / n).is_dir()]
        for name in names:
            if name not in experiments():
                parser.error(f"no experiment named {name!r}")
            print(f"{name}: {refresh(name, args.runs / name).relative_to(ROOT)}")
    if args.out:
        write_pages(args.out)
    if args.refresh is None and not args.out:
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
