# M^4I study workflow. `make run` (see README) runs it on config/config.yaml;
# `snakemake -n --configfile config/<name>.yaml` lists what a study would run.
from snakemake.utils import min_version

min_version("9.0")


# The default study unless --configfile names another (no merge: a study is one whole file).
if not config:

    configfile: f"{workflow.basedir}/config/config.yaml"



include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/captioners.smk"
include: "rules/mfe.smk"
include: "rules/attacks.smk"
include: "rules/results.smk"


report: "report/workflow.rst"


rule all:
    """The whole study."""
    input:
        PLAN.data_targets(),
        PLAN.utility(),
        PLAN.mfe_quality(),
        PLAN.attack_metrics(),
        rules.tables.output,
        rules.figures.output,
    default_target: True


rule data:
    """The data part of the study only: manifests and splits."""
    input:
        PLAN.data_targets(),


rule attacks:
    """Everything up to the attacks: signals, MFEs, per-record attack scores and metrics."""
    input:
        PLAN.mfe_quality(),
        PLAN.attack_metrics(),


rule results:
    """Tables, figures and the headline metrics."""
    input:
        rules.tables.output,
        rules.figures.output,


rule captioners:
    """Data, trained captioners, their generated captions and caption quality."""
    input:
        PLAN.data_targets(),
        PLAN.utility(),
