#!/usr/bin/env bash
# The real install, as a user gets it: build the wheel from this checkout, install it (not
# editable) into a fresh virtual environment outside the checkout, and from there import every
# module of the package, run `unlearn-guard gate --help`, and gate the shipped small world on a
# few of its own images. Proves the wheel holds every subpackage and the shipped weights.
# scripts/test.sh runs it before the test suite; it runs alone too. Log: $work/check_wheel.log.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d -t unlearn_guard_wheel.XXXXXX)"
log="$work/check_wheel.log"
fail() {
  echo "check_wheel: $1; last lines of $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
}
echo "check_wheel: building the wheel and installing it into a fresh venv in $work (log: $log)"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
# --no-compile: pip would byte-compile every installed file (all of torch, lightning, transformers: about
# a minute of the install, measured); instead the first import below writes the .pyc of what the package
# actually imports (PYTHONDONTWRITEBYTECODE unset for it), and the later steps reuse them. A file that
# does not compile still fails here: every module of the package is imported.
unset PYTHONDONTWRITEBYTECODE
"$py" -m pip install --upgrade pip >>"$log" 2>&1 || fail "pip upgrade failed"
# torch first, pinned, so pip takes the CPU build on this machine's disk (see scripts/env.sh).
"$py" -m pip install --no-compile "torch==2.13.0" >>"$log" 2>&1 || fail "installing torch failed"
"$py" -m pip wheel --no-deps --wheel-dir "$work/dist" "$root" >>"$log" 2>&1 || fail "building the wheel failed"
wheel="$(ls "$work"/dist/unlearn_guard-*.whl)"
# With the extras whose modules the package holds (the Lightning and accelerate adapters, the
# report's plots, the Triton kernels), so that every module can be imported.
"$py" -m pip install --no-compile "$wheel[lightning,train,report,triton]" >>"$log" 2>&1 || fail "installing $wheel failed"
cd "$work"  # outside the checkout: nothing can be imported from the source tree
"$py" - "$root" <<'PY' >>"$log" 2>&1 || fail "the installed package is incomplete"
import importlib, pathlib, pkgutil, sys
import unlearn_guard
installed = pathlib.Path(unlearn_guard.__file__).resolve().parent
source = pathlib.Path(sys.argv[1]).resolve()
assert source not in installed.parents, f"imported from the checkout: {installed}"
expected = {p.relative_to(source).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
            for p in (source / "unlearn_guard").rglob("*.py")}
found = {m.name for m in pkgutil.walk_packages(unlearn_guard.__path__, "unlearn_guard.")} | {"unlearn_guard"}
missing = sorted(expected - found)
assert not missing, f"modules missing from the wheel: {missing}"
for name in sorted(found):
    if not name.endswith(".__main__"):  # `python -m` entry points run the command when imported
        importlib.import_module(name)
weights = sorted(str(p.relative_to(source)) for p in (source / "unlearn_guard/world/weights").rglob("*") if p.is_file())
absent = [w for w in weights if not (installed.parent / w).is_file()]
assert not absent, f"shipped weights missing from the wheel: {absent}"
print(f"imported {len(found)} modules from {installed}; {len(weights)} weight files present")
PY
"$work/venv/bin/unlearn-guard" gate --help >>"$log" 2>&1 || fail "unlearn-guard gate --help failed"
"$py" - <<'PY' >>"$log" 2>&1 || fail "writing the world's image folders failed"
from unlearn_guard.gate.folders import save_image_folder
from unlearn_guard.world.evaluate import probe_sets
E, E_prompts, R, R_prompts = probe_sets("circle", 4, seed=10_000)
save_image_folder("concept", E, E_prompts, prefix="circle")
save_image_folder("reference", R, R_prompts, prefix="other")
PY
set +e
"$work/venv/bin/unlearn-guard" gate --model shapes-world --concept-images concept --reference-images reference \
  --preset fast --set inversion.num_steps=5 --set bootstrap_samples=50 --thumbnails 2 --quiet --threads 1 \
  --output gate >>"$log" 2>&1
code=$?
set -e
# 0 (pass), 1 (still remembers) and 4 (inconclusive) are verdicts; anything else means the installed gate is broken.
[ "$code" = 0 ] || [ "$code" = 1 ] || [ "$code" = 4 ] || fail "unlearn-guard gate on the shipped world exited $code"
[ -s gate/gate.json ] && [ -s gate/report.html ] || fail "the gate wrote no gate.json/report.html"
echo "check_wheel: ok ($(basename "$wheel"): every module imports, gate --help runs, the gate on the shipped world exited $code)"
rm -rf "$work"
