# One teacher per task, trained once and shared by every student and seed. The same rule as `student`
# (one command, one spec) under a name of its own only so that a cluster profile can give teachers
# their own resources (workflow/profiles/slurm: set-resources by rule name; teachers are the largest
# nets and train longest) and the log names teacher jobs as such.


use rule student as teacher with:
    wildcard_constraints:
        model=alternatives(TEACHERS),
        method="fp|pretrained",
        variant="fp32",
