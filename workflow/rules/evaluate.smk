# The paper's speed claim: deep vs shallow architectures timed on this machine, once per preset.


rule latency_depth:
    output:
        RESULTS + "/latency_depth.csv",
    log:
        RESULTS + "/latency_depth.log",
    params:
        cfg=CFG["evaluation"]["depth_latency"],
    threads: CFG["evaluation"]["depth_latency"]["threads"]
    shell:
        "qd latency --out {output} --batch {params.cfg[batch_size]} --image-size {params.cfg[image_size]}"
        " --warmup {params.cfg[warmup]} --repeats {params.cfg[repeats]} --threads {params.cfg[threads]}"
        " --device {params.cfg[device]} > {log} 2>&1"
