# Collect every run into summary.csv, the paper-layout tables, claims.md and the figures.
from qd.report import report_files


def report_outputs():
    return [str(p) for p in report_files(Path(RESULTS), Path(FIGURES), list(CFG["tasks"]))]


def captioned(path):
    """Declare an output for `snakemake --report`, with its caption file from workflow/report/."""
    p = Path(path)
    kind = "table" if p.parent.name == "tables" else ("figure" if p.parent.parts[0] == "figures" else p.stem)
    name = p.stem.split("_", 1)[1] if kind in ("table", "figure") else p.stem
    return report(path, caption=f"../report/{name}.rst", category=kind.title() + "s")


rule report:
    input:
        metrics=[run_files(r) for r in RUNS],
    output:
        [captioned(p) if p.endswith((".png", ".md")) else p for p in report_outputs()],
    log:
        RESULTS + "/report.log",
    params:
        config=json.dumps(CFG, sort_keys=True),
    shell:
        "qd report --config-json {params.config:q} --results " + RESULTS + " --figures " + FIGURES + " > {log} 2>&1"
