#!/usr/bin/env bash
# Figure 3's MCEM curve, estimated again on the run's kept checkpoints (one every 10^5 samples:
# benchmarks/figure3_mcem_checkpoints.yaml): the test log p(x) of Appendix D with the paper's
# settings and the seed the run logged with (0), the same with another seed (1), and a longer
# chain (500 burn-in iterations instead of 50, 200 samples instead of 50, 10,000 prior draws for
# the chains' starting points instead of 1,000). Usage:
#   bash benchmarks/figure3_mcem_recheck.sh runs/figure3_mcem/figure3_n50000_mcem/version_0/checkpoints [STEP ...]
# STEP: optimizer steps of the checkpoints (5 per minibatch of 100: samples = 20 x STEP); it waits
# for a checkpoint that a running fit has not written yet. One line per estimate.
set -euo pipefail
checkpoints=$1; shift
steps=("${@:-5000 10000 25000 50000 100000 250000 500000}")
settings=("seed0|--marginal_likelihood.seed 0"
          "seed1|--marginal_likelihood.seed 1"
          "long|--marginal_likelihood.seed 0 --marginal_likelihood.settings.burn_in 500 --marginal_likelihood.settings.num_samples 200 --marginal_likelihood.settings.prior_draws 10000")
for step in ${steps[*]}; do
  until ls "$checkpoints"/epoch=*-step="$step".ckpt >/dev/null 2>&1; do sleep 30; done
  checkpoint=$(ls "$checkpoints"/epoch=*-step="$step".ckpt)
  for setting in "${settings[@]}"; do
    started=$(date +%s)
    # shellcheck disable=SC2086  # the setting's arguments are words
    line=$(python -m lit_vae test --config figure3_n50000_mcem --ckpt_path "$checkpoint" --progress_bar.refresh_rate 0 \
           ${setting#*|} 2>&1 | grep "log p(x) of the first" | tail -1)
    echo "$((step * 20)) samples | ${setting%%|*} | $(( $(date +%s) - started )) s | $line"
  done
done
