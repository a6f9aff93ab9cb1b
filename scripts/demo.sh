#!/usr/bin/env bash
# Set up and run the main job at demo scale on the embedded sample faces: the MPCNet chain, each stage's output
# feeding the next:
#   1. the StyleGAN2 prior without noise inputs   (bfrzoo fit --recipe mpcnet_prior  --demo -> RUN/prior.pt)
#   2. the parsing network, 7 + 10 + 7 blocks      (bfrzoo fit --recipe mpcnet_parser --demo -> RUN/parser.pt)
#   3. MPCNet with both priors                     (bfrzoo fit --recipe mpcnet --demo)
# Leaves runs/demo/<stage>/logs/version_N/ for each stage; MPCNet's has checkpoints/, restorer.pt,
# test_metrics.{md,json} and test_grid.png (rows of LQ | restored | HQ).
#
#   bash scripts/demo.sh                    # the MPCNet chain (a few minutes on a 2-core CPU)
#   bash scripts/demo.sh --recipe unet      # one recipe alone at demo scale (any of `bfrzoo list`)
# Extra arguments go to every `bfrzoo fit` (e.g. --trainer.max_epochs 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=${WANDB_MODE:-offline}
recipe=mpcnet
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--recipe" ]; then recipe=$2; shift 2; else args+=("$1"); shift; fi
done
bfrzoo=.venv/bin/bfrzoo
root=runs/demo

# fit one stage at demo scale; print its (newest) run folder on the last line
stage() {
  local name=$1
  shift
  "$bfrzoo" fit --recipe "$name" --demo --trainer.default_root_dir "$root/$name" "$@" "${args[@]}" >&2
  ls -d "$root/$name"/logs/version_* | sort -V | tail -1
}

if [ "$recipe" != "mpcnet" ]; then
  run=$(stage "$recipe")
  echo "demo of $recipe done: $run"
  exit 0
fi

echo "== 1/3 StyleGAN2 prior (noise inputs removed) ==" >&2
prior_run=$(stage mpcnet_prior)
echo "== 2/3 parsing network ==" >&2
parser_run=$(stage mpcnet_parser)
echo "== 3/3 MPCNet with both priors ==" >&2
run=$(stage mpcnet --model.init_args.prior_checkpoint "$prior_run/prior.pt" \
  --model.init_args.parser_checkpoint "$parser_run/parser.pt" --model.init_args.require_priors true)
echo "MPCNet demo chain done: prior $prior_run/prior.pt, parser $parser_run/parser.pt, MPCNet run $run"
cat "$run/test_metrics.md"
