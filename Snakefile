# bestie: BESTIE (CVPR 2022) weakly-supervised instance segmentation as a Snakemake workflow.
#
#   snakemake --cores all              # the embedded synthetic default, on this machine
#   snakemake --profile slurm          # on a SLURM cluster (profiles/slurm)
#
# Every artifact lives under results/{experiment}/ (formats: bestie/artifacts.py). A stage
# shared by several experiments (equal config and inputs) lives under the first of them.
#
# results/{exp}/
#   dataset/{split}.json            image records (id, file, size, image-level classes, points)
#   dataset/{split}_gt.json         COCO ground truth; read only by evaluation and statistics
#   dataset/images/                 generated images (synthetic data set only)
#   classifier/{cam,pam}/           model.pt, train_log.csv, checkpoints/last.pt
#   cues/{split}.h5, cues/stats.json  instance cues (peaks + class maps), their statistics
#   wsss/{split}/, wsss/miou_{split}.json   semantic label maps (PNG), their mIoU
#   pseudo/train.json, stats.json    pseudo instances (COCO + centre + cue), true positives
#   instance/model.pt, train_log.csv, checkpoints/last.pt, snapshots/, pred_{split}.json
#   maskrcnn/pseudo_gt_train.json, model.pt, train_log.csv, pred_val.json   MRCNN refinement
#   eval/{model}_{split}.json        VOC mAP25/50/70/75 + COCO AP; eval/instance_curve_val.json
# results/summary.tsv, results/report/   Table-1 summary and the report's figures
#   logs/, benchmarks/              one log and one benchmark (time, memory) file per job
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/cues.smk"
include: "workflow/rules/wsss.smk"
include: "workflow/rules/pseudo.smk"
include: "workflow/rules/instance.smk"
include: "workflow/rules/maskrcnn.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_targets(),
    default_target: True
