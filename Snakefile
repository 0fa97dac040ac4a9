# faceflow: face datasets -> OFRecord -> training runs -> per-checkpoint validation, export, IJB, report.
# Run `snakemake --cores 8 all`; the config is validated against workflow/schemas/config.schema.yaml.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/import.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/ijb.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    validate,
    export,
    ijb,
    report,


rule all:
    default_target: True
    input:
        validation_results(),
        export_outputs(),
        ijb_results(),
        report_outputs(),


rule validate:
    input:
        validation_results(),


rule export:
    input:
        export_outputs(),


rule ijb:
    input:
        ijb_results(),


rule report:
    input:
        report_outputs(),
