#!/usr/bin/env bash
# A short pilot of the FERPlus benchmark on UDC-FERPlus (T-OLED, simulator defaults),
# sized to finish inside one 2-core session: the CPU recipes with a lighter geometry
# (UDCformer levels 12/6/3, conv E_I widths 16/32/64) and EPOCHS epochs per run.
# Every run is selected on FER2013Valid; the test split is only measured at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-6}
WORK=benchmarks/work
UDC=$WORK/udc_ferplus
LIGHT=(model.options.udcformer.max_level1_size=16 "model.options.image_encoder_kwargs={widths: [16, 32, 64]}")
.venv/bin/lrdif synthesize --dataset ferplus --src ../shared/data/ferplus --dst "$UDC" \
  --display toled --seed 0 --workers 2 --no-progress
common=(data.root="$UDC" epochs="$EPOCHS")
# train OUT CONFIG OVERRIDES...: resumes OUT when a killed run left state there.
train() {
  local out=$1; shift
  if [ -f "$out/resume.safetensors" ]; then .venv/bin/lrdif train "$@" --out "$out" --resume
  else .venv/bin/lrdif train "$@" --out "$out"; fi
}
train $WORK/pilot/s1 cpu_s1 "${common[@]}" "${LIGHT[@]}"
train $WORK/pilot/s2 cpu_s2 "${common[@]}" model.init_from=$WORK/pilot/s1/best.safetensors
train $WORK/pilot/resnet18 cpu_resnet18 "${common[@]}"
train $WORK/pilot/s2_no_dm cpu_s2_no_dm "${common[@]}" model.init_from=$WORK/pilot/s1/best.safetensors
for run in s1 s2 resnet18 s2_no_dm; do
  .venv/bin/lrdif evaluate $WORK/pilot/$run/best.safetensors --dataset ferplus --data "$UDC" \
    --split test --json $WORK/pilot/$run/test.json --out $WORK/pilot/$run/eval
done
# Fig. 6 analogue: the stage-2 model's reverse chain run with 1..16 steps.
.venv/bin/lrdif evaluate $WORK/pilot/s2/best.safetensors --dataset ferplus --data "$UDC" \
  --split test --steps 1,2,4,8,16 --json $WORK/pilot/s2/steps.json --out $WORK/pilot/s2/steps
.venv/bin/python benchmarks/pilot_summary.py --work $WORK/pilot
