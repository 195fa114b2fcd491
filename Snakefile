# qd-repro: regenerate the tables and figures of "Model compression via distillation and quantization".
#   snakemake --cores 2                                   the embedded demo (config/config.yaml)
#   snakemake --cores 8 --config preset=<name>            a preset from config/presets/<name>.yaml
#   snakemake --cores 8 --configfile my.yaml              any config (validated before any job starts)
# The config is resolved and validated in workflow/rules/common.smk; every rule calls the `qd` CLI.
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/student.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


onstart:
    start_prefork()


onsuccess:
    stop_prefork()


onerror:
    stop_prefork()


rule all:
    default_target: True
    input:
        report_outputs(),
