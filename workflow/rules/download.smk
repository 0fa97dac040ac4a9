# resources/datasets/{dataset}/: train.rec, train.idx, property and the benchmark .bin files.
# One rule per dataset in use, by source: drawn by `faceflow synth` (which also writes the IJB-style ijb/IJBC
# and ijb/IJBB unless the dataset's ijb_identities is 0), fetched by `faceflow download`
# (http/https/file URL, resumable, sha256-checked, unpacked), or linked from a local directory.
# A ready-made OFRecord dataset (`ofrecord: {url | path}`) gets train/ and one folder per benchmark instead,
# which training and validation read as they are (no convert rules run for it).


for _ds in datasets_from("synthetic"):

    rule:
        name:
            f"synth_{_ds.name}"
        output:
            synth_files(_ds.name),
        params:
            classes=_ds.settings["synthetic"]["classes"],
            per_class=_ds.settings["synthetic"]["per_class"],
            pairs=_ds.settings["synthetic"]["pairs"],
            seed=_ds.settings["synthetic"]["seed"],
            ijb_identities=_ds.ijb_identities,
            out=lambda wildcards, output: os.path.dirname(output[0]),
        log:
            f"results/logs/datasets/{_ds.name}.log",
        threads: 2
        conda:
            "../envs/faceflow.yaml"
        shell:
            "faceflow synth {params.out} --classes {params.classes} --per-class {params.per_class}"
            " --pairs {params.pairs} --seed {params.seed} --ijb-identities {params.ijb_identities}"
            " --workers {threads} > {log} 2>&1"


for _ds in datasets_from("url"):

    rule:
        name:
            f"download_{_ds.name}"
        output:
            dataset_files(_ds.name),
        params:
            url=_ds.settings["url"],
            sha256=f"--sha256 {_ds.settings['sha256']}" if "sha256" in _ds.settings else "",
            caps=archive_caps(_ds.settings),
            out=lambda wildcards, output: os.path.dirname(output[0]),
        log:
            f"results/logs/datasets/{_ds.name}.log",
        conda:
            "../envs/faceflow.yaml"
        shell:
            "faceflow download {params.url:q} {params.out:q} {params.sha256} {params.caps:q} > {log:q} 2>&1"


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
            "for out in {output:q}; do"
            " test -f {params.source:q}/$(basename $out) || {{ echo missing {params.source:q}/$(basename $out); exit 1; }};"
            " ln -sfn {params.source:q}/$(basename $out) $out; done > {log:q} 2>&1"


for _ds in datasets_from("ofrecord"):
    if "url" in _ds.settings["ofrecord"]:

        rule:
            name:
                f"download_ofrecord_{_ds.name}"
            output:
                [directory(folder) for folder in ofrecord_dirs(_ds.name)],
            params:
                url=_ds.settings["ofrecord"]["url"],
                sha256=(["--sha256", _ds.settings["ofrecord"]["sha256"]] if "sha256" in _ds.settings["ofrecord"]
                        else []),
                caps=archive_caps(_ds.settings["ofrecord"]),
                out=f"resources/datasets/{_ds.name}",
            log:
                f"results/logs/datasets/{_ds.name}.log",
            conda:
                "../envs/faceflow.yaml"
            shell:
                "faceflow download {params.url:q} {params.out:q} {params.sha256:q} {params.caps:q} > {log:q} 2>&1"

    else:

        rule:
            name:
                f"link_ofrecord_{_ds.name}"
            output:
                [directory(folder) for folder in ofrecord_dirs(_ds.name)],
            params:
                source=os.path.abspath(_ds.settings["ofrecord"]["path"]),
            log:
                f"results/logs/datasets/{_ds.name}.log",
            conda:
                "../envs/faceflow.yaml"
            shell:
                "for out in {output:q}; do"
                " test -d {params.source:q}/$(basename $out) || {{ echo missing {params.source:q}/$(basename $out); exit 1; }};"
                " rm -rf $out; ln -sfn {params.source:q}/$(basename $out) $out; done > {log:q} 2>&1"
