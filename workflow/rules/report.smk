# Collect every run into summary.csv, the paper-layout tables, claims.md and the figures.
from qd.report import report_files


DEPTH_LATENCY = CFG["evaluation"]["depth_latency"]["enabled"]


def report_outputs():
    files = report_files(Path(RESULTS), Path(FIGURES), CFG["tasks"], DEPTH_LATENCY, CFG["evaluation"]["onnx"]["enabled"])
    return [str(p) for p in files]


# `snakemake --report` shows a category's name as given (it adds no plural): each is written out here
CATEGORIES = {"table": "Tables", "figure": "Figures", "claims": "Claims"}


def captioned(path):
    """Declare an output for `snakemake --report`, with its caption file from workflow/report/."""
    p = Path(path)
    kind = "table" if p.parent.name == "tables" else ("figure" if p.parent.parts[0] == "figures" else p.stem)
    name = p.stem.split("_", 1)[1] if kind in ("table", "figure") and p.stem != "latency_depth" else p.stem
    return report(path, caption=f"../report/{name}.rst", category=CATEGORIES.get(kind, kind.replace("_", " ").title()))


rule report:
    input:
        metrics=[run_files(r) for r in RUNS],
        models=[run_files(r, "model.qda") for r in RUNS],  # claims 5 and 6 read the saved weights
        data=[str(data_file(RESULTS, t)) for t in CFG["tasks"]],  # test inputs and references
        latency=RESULTS + "/latency.csv",
        depth=[RESULTS + "/latency_depth.csv"] if DEPTH_LATENCY else [],
    output:
        [captioned(p) if p.endswith((".png", ".md")) else p for p in report_outputs()],
    log:
        RESULTS + "/report.log",
    params:
        config=CONFIG_FILE,
    shell:
        "qd report --config {params.config} --results " + RESULTS + " --figures " + FIGURES + " > {log} 2>&1"
