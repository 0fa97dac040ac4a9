# resources/datasets/{dataset}/: train.rec, train.idx, property and the benchmark .bin files.
# One rule per dataset in use, by source: drawn by `faceflow synth`, fetched by `faceflow download`
# (http/https/file URL, resumable, sha256-checked, unpacked), or linked from a local directory.


for _ds in datasets_from("synthetic"):

    rule:
        name:
            f"synth_{_ds.name}"
        output:
            dataset_files(_ds.name),
        params:
            classes=_ds.settings["synthetic"]["classes"],
            per_class=_ds.settings["synthetic"]["per_class"],
            pairs=_ds.settings["synthetic"]["pairs"],
            seed=_ds.settings["synthetic"]["seed"],
            out=lambda wildcards, output: os.path.dirname(output[0]),
        log:
            f"results/logs/datasets/{_ds.name}.log",
        threads: 2
        conda:
            "../envs/faceflow.yaml"
        shell:
            "faceflow synth {params.out} --classes {params.classes} --per-class {params.per_class}"
            " --pairs {params.pairs} --seed {params.seed} --workers {threads} > {log} 2>&1"


for _ds in datasets_from("url"):

    rule:
        name:
            f"download_{_ds.name}"
        output:
            dataset_files(_ds.name),
        params:
            url=_ds.settings["url"],
            sha256=f"--sha256 {_ds.settings['sha256']}" if "sha256" in _ds.settings else "",
            caps=[f"--{key.replace('_', '-')}={_ds.settings[key]}" for key in ("max_unpacked_bytes", "max_members")
                  if key in _ds.settings],
            out=lambda wildcards, output: os.path.dirname(output[0]),
        log:
            f"results/logs/datasets/{_ds.name}.log",
        conda:
            "../envs/faceflow.yaml"
        shell:
            "faceflow download {params.url:q} {params.out} {params.sha256} {params.caps:q} > {log} 2>&1"


for _ds in datasets_from("path"):

    rule:
        name:
            f"link_{_ds.name}"
        output:
            dataset_files(_ds.name),
        params:
            source=os.path.abspath(_ds.settings["path"]),
        log:
            f"results/logs/datasets/{_ds.name}.log",
        conda:
            "../envs/faceflow.yaml"
        shell:
            "for out in {output}; do"
            ' test -f "{params.source}/$(basename $out)" || {{ echo "missing {params.source}/$(basename $out)"; exit 1; }};'
            ' ln -sfn "{params.source}/$(basename $out)" "$out"; done > {log} 2>&1'
