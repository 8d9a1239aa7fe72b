#!/usr/bin/env bash
# The runs behind the README's "Results on static binarized MNIST", two at a time with one
# torch thread each (the fastest use of 2 cores for batch-100 MLPs), each trained with
# experiment=mnist_cpu and then evaluated with `vaeflow eval` (k=5000, full test set).
# EXPERIMENT=mnist8_cpu runs the same rows on 8-bit MNIST ("Any pixels"; DATA_DIR is then
# the directory holding MNIST/raw). The iw_ rows ("Objectives and gradient estimators", the
# row iwae selects them all) are experiment=iwae_cpu on dynamically binarized MNIST, DATA_DIR
# the directory holding MNIST/raw:
#   EVAL_LIMIT=1000 scripts/mnist_comparison.sh ../shared/data outputs/iwae_cpu iwae
#
#   scripts/mnist_comparison.sh [DATA_DIR] [OUT_DIR] [ROW ...]
#   scripts/mnist_comparison.sh ../shared/data/binarized_mnist outputs/mnist_cpu            # every row
#   scripts/mnist_comparison.sh ../shared/data/binarized_mnist outputs/mnist_cpu iaf4 planar4
#   EVAL_LIMIT=2000 scripts/mnist_comparison.sh ../shared/data/binarized_mnist outputs/mnist_cpu planar16
#   vaeflow report outputs/mnist_cpu --baseline mean_field --out docs/mnist_cpu
#
# Safe to stop and start again: a row whose run finished and was evaluated is skipped, an
# interrupted training resumes from its last checkpoint (trainer.resume=auto), and a
# finished run without an evaluation is evaluated. Each row logs to OUT_DIR/<row>.log.
# EVAL_LIMIT=N evaluates a seeded subset of N test images (`vaeflow eval ... limit=N`), for a
# first look; the README's rows are on the full test set. EVAL_ARGS="..." adds overrides to
# every row's `vaeflow eval` (the README's gaps: EVAL_LIMIT=1000 EVAL_ARGS="gaps=true gaps.n=100").
# maf4 samples sequentially and is
# evaluated in larger chunks (memory_mb=1024: about 75 minutes at one thread, 1 hour at two).
set -euo pipefail

DATA=${1:-../shared/data/binarized_mnist}
EVAL_LIMIT=${EVAL_LIMIT:-}
EVAL_ARGS=${EVAL_ARGS:-}
EXPERIMENT=${EXPERIMENT:-mnist_cpu}
OUT=${2:-outputs/mnist_cpu}
shift $(($# < 2 ? $# : 2))

# row name -> overrides of the experiment (mnist_cpu or mnist8_cpu)
declare -A ROWS=(
  [mean_field]="posterior=mean_field"
  [full_cov]="posterior=full_cov"
  [planar4]="posterior=planar posterior.depth=4"
  [planar16]="posterior=planar posterior.depth=16"
  [radial4]="posterior=radial posterior.depth=4"
  [householder4]="posterior=householder posterior.depth=4"
  [iaf4]="posterior=iaf posterior.depth=4"
  [realnvp4]="posterior=realnvp posterior.depth=4"
  [sylvester_o4]="posterior=sylvester posterior.depth=4"
  [sylvester_h4]="posterior=sylvester posterior.depth=4 posterior.variant=householder"
  [sylvester_t4]="posterior=sylvester posterior.depth=4 posterior.variant=triangular"
  [autoregressive]="posterior=autoregressive"
  [maf4]="posterior=maf posterior.depth=4"
  [mean_field_gated_300]="posterior=mean_field encoder.activation=gated decoder.activation=gated trainer.max_epochs=300"
  [iaf4_gated_150]="posterior=iaf posterior.depth=4 encoder.activation=gated decoder.activation=gated trainer.max_epochs=150"
  # the priors (issue "Flexible priors"): the gated MLP of the VampPrior code, 100 epochs each;
  # the IAF VampPrior mixes the Gaussian bases q0(z|u_k) (prior.mixture=base: see conf/prior/vamp.yaml)
  [mean_field_gated]="posterior=mean_field encoder.activation=gated decoder.activation=gated"
  [mean_field_gated_vamp]="posterior=mean_field encoder.activation=gated decoder.activation=gated prior=vamp"
  [mean_field_gated_flow]="posterior=mean_field encoder.activation=gated decoder.activation=gated prior=flow"
  [iaf4_gated]="posterior=iaf posterior.depth=4 encoder.activation=gated decoder.activation=gated"
  [iaf4_gated_vamp]="posterior=iaf posterior.depth=4 encoder.activation=gated decoder.activation=gated prior=vamp prior.mixture=base"
  # IAF against the flow prior blew up in its first epoch without a clip (a step of loss 1.6e9)
  [iaf4_gated_flow]="posterior=iaf posterior.depth=4 encoder.activation=gated decoder.activation=gated prior=flow trainer.grad_clip=1000"
  # neural spline flows (issue "Neural spline flows"), the ReLU MLP of the table's other rows
  [nsf_ar4]="posterior=nsf_ar posterior.depth=4"
  [nsf_coupling4]="posterior=nsf_coupling posterior.depth=4"
  [nsf_maf4]="posterior=nsf_maf posterior.depth=4"
  # objectives (issue "Objectives and gradient estimators"): experiment=iwae_cpu, the IWAE paper's
  # tanh MLP 784-200-200 with 50 latents on dynamically binarized MNIST (DATA_DIR holds MNIST/raw),
  # each row the epochs of 900 s of training steps at one thread, from the step costs that
  # `python scripts/step_cost.py --budget-s 900 --common "experiment=iwae_cpu dataset.root=../shared/data" ...`
  # measured (ms/step: 7, 16, 163, 178 mean-field; 25, 65, 625, 691 RealNVP)
  [iw_vae]="trainer.max_epochs=258"
  [iw_iwae5]="objective=iwae objective.k=5 trainer.max_epochs=111"
  [iw_iwae50]="objective=iwae objective.k=50 trainer.max_epochs=11"
  [iw_iwae50_dreg]="objective=iwae objective.k=50 objective.gradient=dreg trainer.max_epochs=10"
  [iw_realnvp4_vae]="posterior=realnvp posterior.depth=4 trainer.max_epochs=73"
  [iw_realnvp4_iwae5]="posterior=realnvp posterior.depth=4 objective=iwae objective.k=5 trainer.max_epochs=28"
  [iw_realnvp4_iwae50]="posterior=realnvp posterior.depth=4 objective=iwae objective.k=50 trainer.max_epochs=3"
  [iw_realnvp4_iwae50_dreg]="posterior=realnvp posterior.depth=4 objective=iwae objective.k=50 objective.gradient=dreg trainer.max_epochs=3"
)
# row name -> overrides of vaeflow eval
declare -A EVAL_ROWS=(
  [maf4]="memory_mb=1024"
  [nsf_maf4]="memory_mb=1024"
)
ORDER=(mean_field planar4 sylvester_o4 iaf4 householder4 radial4 full_cov realnvp4 sylvester_h4 sylvester_t4
  autoregressive maf4 mean_field_gated_300
  iaf4_gated_150 planar16 mean_field_gated mean_field_gated_vamp mean_field_gated_flow iaf4_gated
  iaf4_gated_vamp iaf4_gated_flow nsf_ar4 nsf_coupling4 nsf_maf4)
# the rows of experiment=iwae_cpu (selected together as the row "iwae")
IWAE_ORDER=(iw_vae iw_iwae5 iw_iwae50 iw_iwae50_dreg iw_realnvp4_vae iw_realnvp4_iwae5 iw_realnvp4_iwae50
  iw_realnvp4_iwae50_dreg)

requested=("$@")
[ ${#requested[@]} -eq 0 ] && requested=("${ORDER[@]}")
selected=()
for row in "${requested[@]}"; do
  if [ "$row" = iwae ]; then
    selected+=("${IWAE_ORDER[@]}")
  elif [ -z "${ROWS[$row]+x}" ]; then
    echo "error: no row '$row'; rows: ${ORDER[*]} ${IWAE_ORDER[*]} (or iwae: all iw_ rows)" >&2
    exit 2
  else
    selected+=("$row")
  fi
done
static=0
for row in "${selected[@]}"; do
  if [[ $row == iw_* ]]; then
    if [ ! -d "$DATA/MNIST/raw" ]; then
      echo "error: row $row is dynamically binarized MNIST: no MNIST/raw in $DATA; give the directory holding MNIST/raw" >&2
      exit 2
    fi
  else
    static=1
  fi
done
if [ $static = 1 ] && [ "$EXPERIMENT" = mnist_cpu ] && [ ! -f "$DATA/binarized_mnist_test.amat" ]; then
  echo "error: no binarized_mnist_test.amat in $DATA; give the directory of the three .amat files" >&2
  exit 2
fi
mkdir -p "$OUT"

run_row() {  # row overrides eval_overrides (DATA and OUT from the environment)
  local row=$1 overrides=$2 eval_overrides=$3 data=$DATA out=$OUT dir=$OUT/$1 experiment=$EXPERIMENT
  [[ $row == iw_* ]] && experiment=iwae_cpu
  if [ -f "$dir/metrics.json" ] && compgen -G "$dir/eval/*_test_k5000/eval.json" >/dev/null; then
    echo "$row: done"
    return 0
  fi
  echo "$row: running (log: $out/$row.log)"
  if [ ! -f "$dir/metrics.json" ]; then
    # shellcheck disable=SC2086  # the overrides are words
    if ! vaeflow train experiment="$experiment" $overrides dataset.root="$data" trainer.threads=1 \
      trainer.progress=plain trainer.resume=auto hydra.run.dir="$dir" >>"$out/$row.log" 2>&1; then
      echo "$row: training failed: $(tail -n 1 "$out/$row.log")" >&2
      return 1
    fi
  fi
  # shellcheck disable=SC2086  # the overrides are words
  if ! vaeflow eval "$dir" k=5000 $eval_overrides $EVAL_ARGS ${EVAL_LIMIT:+limit="$EVAL_LIMIT"} threads=1 progress=plain \
    >>"$out/$row.log" 2>&1; then
    echo "$row: evaluation failed: $(tail -n 1 "$out/$row.log")" >&2
    return 1
  fi
  echo "$row: done"
}
export -f run_row
export DATA OUT EVAL_LIMIT EVAL_ARGS EXPERIMENT

for row in "${selected[@]}"; do
  printf '%s\0%s\0%s\0' "$row" "${ROWS[$row]}" "${EVAL_ROWS[$row]:-}"
done | xargs -0 -n 3 -P 2 bash -c 'run_row "$1" "$2" "$3"' _
