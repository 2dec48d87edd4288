#!/usr/bin/env bash
# Packaging as users install it (`make test-packaging`, run by .ci/run after `make test`).
#
# Builds wheels of vgrpo, the built-in plugins (plugins/*) and the example plugins (examples/plugins/*) from a
# copy of the sources (so stale build/ or *.egg-info folders cannot leak into them), checks that every file of
# every import package is in its wheel, installs the wheels non-editable into a fresh venv (torch==2.13.0, the
# local CPU build, first), and then, from a folder outside the repository, runs: `vgrpo --strict-plugins
# plugins --json` (every entry point listed, no errors), `vgrpo score` on the shipped example completions,
# `vgrpo data synth` + a 2-step `vgrpo train` of the embedded tiny model (metrics.jsonl and a checkpoint), and
# `vgrpo new-plugin` (templates are package data), whose task package then installs, is listed and passes the
# tests it was written with (vgrpo.testing and the pytest fixtures from the vgrpo wheel).
#
# Environment: PYTHON (default python3) makes the venv; VGRPO_PACKAGING_KEEP=1 keeps the work folder;
# VGRPO_PACKAGING_REF=<commit> builds that commit (git archive) instead of the working tree.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vgrpo-packaging.XXXXXX")
SRC=$WORK/src
WHEELS=$WORK/wheels
VENV=$WORK/venv
RUN=$WORK/run
START=$SECONDS
# Installs skip byte-compiling (all of torch would double the install); imports then write the bytecode of
# what they use, once, which they cannot where PYTHONDONTWRITEBYTECODE is set (each command would recompile).
unset PYTHONDONTWRITEBYTECODE

cleanup() {
    local rc=$? pids
    [[ $BASHPID == "$$" ]] || return 0  # a background job killed before its exec would run this trap too
    pids=$(jobs -p)  # this script's own background jobs (the wheel build, the score runs) when it fails early
    [[ -z $pids ]] || kill $pids 2>/dev/null || true
    if [[ "${VGRPO_PACKAGING_KEEP:-0}" == 1 ]]; then
        echo "work folder kept: $WORK" >&2
    else
        echo "== [$((SECONDS - START))s] removing the work folder"
        rm -rf "$WORK"
    fi
    [[ $rc -eq 0 ]] || echo "packaging check FAILED (exit $rc); VGRPO_PACKAGING_KEEP=1 keeps its folder" >&2
}
trap cleanup EXIT
fail() {
    echo "packaging check: $*" >&2
    exit 1
}
step() { echo "== [$((SECONDS - START))s] $*"; }

# --- 1. the sources: what a clone holds (tracked files plus new files git does not ignore), or a commit's ---
mkdir -p "$SRC" "$WHEELS" "$RUN"
if [[ -n "${VGRPO_PACKAGING_REF:-}" ]]; then
    step "exporting $VGRPO_PACKAGING_REF to $SRC"
    git -C "$ROOT" archive "$VGRPO_PACKAGING_REF" | tar -xf - -C "$SRC"
elif git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    step "copying the sources to $SRC"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$SRC"
else
    step "copying the sources to $SRC"
    (cd "$ROOT" && tar --exclude=.venv --exclude='.venv-*' --exclude=build --exclude='*.egg-info' \
        --exclude=__pycache__ --exclude=site --exclude=runs -cf - .) | tar -xf - -C "$SRC"
fi
PROJECTS=("$SRC")
for p in "$SRC"/plugins/*/pyproject.toml "$SRC"/examples/plugins/*/pyproject.toml; do
    [[ -f $p ]] && PROJECTS+=("$(dirname "$p")")
done
[[ ${#PROJECTS[@]} -ge 5 ]] || fail "expected vgrpo and the 4 built-in plugins at least, found ${PROJECTS[*]}"

# --- 2. a fresh venv; the wheels build (in the background) while torch installs ---------------------------
step "creating a fresh venv in $VENV"
"$PYTHON" -m venv "$VENV"
PY=$VENV/bin/python
PIP=("$PY" -m pip --disable-pip-version-check)
pip_install() {  # quiet, minus the warnings this machine's pip config prints for absent local index pages
    "${PIP[@]}" install -q --no-compile "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2)
}

# --- 3. wheels: the projects' [build-system] requires go into the venv once, then each project builds without
#        isolation (a fresh isolated build environment per project costs more than the rest of the check)
mapfile -t BUILD_REQUIRES < <("$PY" - "${PROJECTS[@]}" <<'PY'
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

requires = set()
for project in sys.argv[1:]:
    system = tomllib.loads((Path(project) / "pyproject.toml").read_text()).get("build-system", {})
    requires.update(system.get("requires", ["setuptools", "wheel"]))
print("\n".join(sorted(requires)))
PY
)
step "building ${#PROJECTS[@]} wheels (build requires: ${BUILD_REQUIRES[*]}) and installing torch==2.13.0"
pip_install "${BUILD_REQUIRES[@]}" || fail "installing the build requirements ${BUILD_REQUIRES[*]} failed"
"${PIP[@]}" wheel -q --no-deps --no-build-isolation --wheel-dir "$WHEELS" "${PROJECTS[@]}" \
    >"$WORK/build.log" 2>&1 &
BUILD_PID=$!
# torch first, pinned to the local CPU build: a looser requirement would pull several GB of CUDA wheels
pip_install torch==2.13.0 || fail "installing torch==2.13.0 (the local CPU build) failed"
if ! wait "$BUILD_PID"; then
    grep -v "^WARNING: Location 'file:" "$WORK/build.log" >&2
    fail "building the wheels failed (pip's output above)"
fi
shopt -s nullglob
BUILT=("$WHEELS"/*.whl)
[[ ${#BUILT[@]} -eq ${#PROJECTS[@]} ]] || fail "built ${#BUILT[@]} wheels for ${#PROJECTS[@]} projects"

step "checking that every file of every package is in its wheel"
"$PY" - "$SRC" "$WHEELS" "${PROJECTS[@]}" <<'PY' || fail "a wheel lacks files of its package (listed above)"
"""Each project's import packages (folders with __init__.py beside pyproject.toml, or under core/ for vgrpo)
must be in its wheel with every file they hold: modules, subpackages, templates, py.typed."""
import sys
import zipfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

src, wheels, projects = Path(sys.argv[1]), Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
ok = True
for project in projects:
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    stem = meta["name"].replace("-", "_").lower()
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(f"{stem}-{meta['version']}-")]
    if len(found) != 1:
        print(f"{meta['name']}: expected one wheel {stem}-{meta['version']}-*.whl, found {found}")
        ok = False
        continue
    names = set(zipfile.ZipFile(found[0]).namelist())
    root = project / "core" if project == src else project
    packages = [d for d in sorted(root.iterdir()) if (d / "__init__.py").is_file() and d.name != "tests"]
    if not packages:
        print(f"{meta['name']}: no import package found in {root}")
        ok = False
    for package in packages:
        files = [
            f.relative_to(root).as_posix() for f in sorted(package.rglob("*"))
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
        ]  # fmt: skip
        missing = [f for f in files if f not in names]
        for f in missing:
            print(f"{found[0].name}: missing {f}")
        ok &= not missing
        print(f"{found[0].name}: {package.name}/ {len(files) - len(missing)} of its {len(files)} files")
    entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    declared = meta.get("entry-points", {}).get("vgrpo", {})
    if declared and not entry_points:
        print(f"{found[0].name}: no entry_points.txt, but pyproject declares {declared}")
        ok = False
sys.exit(0 if ok else 1)
PY

# --- 4. install the wheels, non-editable -------------------------------------------------------------------
step "installing the wheels into the venv"
pip_install "${BUILT[@]}" || fail "installing the wheels failed (see pip's output above)"
for banned in torchvision torchaudio torchcodec; do
    if "${PIP[@]}" show -q "$banned" >/dev/null 2>&1; then
        fail "$banned got installed (a dependency pulled it); it breaks transformers' image imports here"
    fi
done

# Everything below runs outside the repository, with nothing from the source tree on sys.path.
cd "$RUN"
unset PYTHONPATH VIRTUAL_ENV PYTHONHOME
export PYTHONNOUSERSITE=1 HF_HUB_OFFLINE=1 PATH="$VENV/bin:$PATH"
VG=$VENV/bin/vgrpo
[[ -x $VG ]] || fail "the vgrpo wheel installed no \`vgrpo\` console script"

step "checking that the packages are imported from the venv, not from the sources"
"$PY" - "$ROOT" "${BUILT[@]}" <<'PY' || fail "a package is not installed as a plain (non-editable) wheel"
import importlib
import json
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

root, wheels = Path(sys.argv[1]).resolve(), sys.argv[2:]
site = Path(sysconfig.get_paths()["purelib"]).resolve()
ok = True
for wheel in wheels:
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    for top in sorted(t for t in tops if not t.endswith((".dist-info", ".data"))):
        where = Path(importlib.import_module(top).__file__).resolve()
        if not where.is_relative_to(site) or where.is_relative_to(root):
            print(f"{top} is imported from {where}, not from {site}")
            ok = False
for dist in metadata.distributions():
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        print(f"{dist.metadata['Name']} is an editable install")
        ok = False
strays = [p.name for p in site.iterdir() if p.name.startswith("__editable__") or p.suffix == ".egg-link"]
if strays:
    print(f"editable hooks in site-packages: {strays}")
    ok = False
sys.exit(0 if ok else 1)
PY

# --- 5. vgrpo plugins: every entry point of every wheel, no errors ------------------------------------------
step "vgrpo --strict-plugins plugins --json"
"$VG" --strict-plugins plugins --json >plugins.json || fail "\`vgrpo --strict-plugins plugins --json\` failed"
"$PY" - plugins.json "${PROJECTS[@]}" <<'PY' || fail "\`vgrpo plugins\` does not list every installed plugin"
import json
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

text = Path(sys.argv[1]).read_text()
try:
    listing = json.loads(text)
except json.JSONDecodeError as err:
    sys.exit(f"`vgrpo plugins --json` wrote no valid JSON to stdout ({err}): {text[:2000]!r}")
rows = {p["name"]: p for p in listing["plugins"]}
ok = not listing["errors"]
for error in listing["errors"]:
    print(f"plugin error: {error}")
for project in map(Path, sys.argv[2:]):
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    for name in meta.get("entry-points", {}).get("vgrpo", {}):
        row = rows.get(name)
        if row is None:
            print(f"entry point {name!r} of {meta['name']} is not listed; listed: {sorted(rows)}")
            ok = False
        elif (row["distribution"], row["version"]) != (meta["name"], meta["version"]):
            listed, built = f"{row['distribution']} {row['version']}", f"{meta['name']} {meta['version']}"
            print(f"{name}: listed as {listed}, built as {built}")
            ok = False
        else:
            print(f"{name}: {row['distribution']} {row['version']}, tasks {row['tasks']}")
for builtin in ("rec", "ovd", "count", "math"):
    if builtin not in rows.get(builtin, {}).get("tasks", []):
        print(f"the built-in task {builtin!r} is not registered")
        ok = False
sys.exit(0 if ok else 1)
PY

# --- 6. vgrpo score on the shipped example completions ------------------------------------------------------
check_scores() {  # FILE_IN FILE_OUT LABEL
    "$PY" - "$1" "$2" "$3" <<'PY'
import json
import math
import sys
from pathlib import Path

cases = [line for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
out, label = Path(sys.argv[2]).read_text().splitlines(), sys.argv[3]
try:
    rows = [json.loads(line) for line in out]
except json.JSONDecodeError as err:
    sys.exit(f"{label}: output is not JSONL ({err}):\n" + "\n".join(out[:20]))
if len(rows) != len(cases):
    sys.exit(f"{label}: {len(cases)} cases in, {len(rows)} rows out")


def finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


bad = [
    (i, r) for i, r in enumerate(rows, 1)
    if r.get("error") is not None or not finite(r.get("reward"))
    or not r.get("rewards") or not all(finite(v) for v in r["rewards"].values())
]  # fmt: skip
for i, r in bad:
    print(f"{label} line {i}: expected a finite reward and error null, got {r}")
if not bad and not any(r["reward"] > 0 for r in rows):
    sys.exit(f"{label}: every case scored 0, though the file holds correct completions")
print(f"{label}: {len(rows)} rows, rewards {[round(r['reward'], 3) for r in rows]}")
sys.exit(1 if bad else 0)
PY
}
# (task, file) pairs: the built-ins' examples/completions/<task>.jsonl, and the sample/completions.jsonl an
# example plugin ships, scored with the task its distribution registers
SCORE=()
for task in rec ovd count math; do SCORE+=("$task" "$SRC/examples/completions/$task.jsonl"); done
for completions in "$SRC"/examples/plugins/*/sample/completions.jsonl; do
    task=$("$PY" - "$(dirname "$(dirname "$completions")")/pyproject.toml" <<'PY'
import json
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

dist = tomllib.load(open(sys.argv[1], "rb"))["project"]["name"]
rows = [p for p in json.load(open("plugins.json"))["plugins"] if p["distribution"] == dist]
print(rows[0]["tasks"][0] if rows and rows[0]["tasks"] else "")
PY
)
    [[ -n $task ]] || fail "${completions#"$SRC"/} is shipped, but its distribution registers no task"
    SCORE+=("$task" "$completions")
done
step "vgrpo score, in parallel, on $((${#SCORE[@]} / 2)) files"
PIDS=()
for ((i = 0; i < ${#SCORE[@]}; i += 2)); do
    "$VG" score "${SCORE[i]}" "${SCORE[i + 1]}" >"score-${SCORE[i]}.jsonl" 2>"score-${SCORE[i]}.log" &
    PIDS+=($!)
done
for ((i = 0; i < ${#SCORE[@]}; i += 2)); do
    task=${SCORE[i]}
    label="vgrpo score $task ${SCORE[i + 1]#"$SRC"/}"
    wait "${PIDS[i / 2]}" || { cat "score-$task.log" >&2; fail "\`$label\` failed"; }
    check_scores "${SCORE[i + 1]}" "score-$task.jsonl" "$label" || fail "\`$label\` gave bad rows"
done

# --- 7. synthetic data and a 2-step training of the embedded tiny model ------------------------------------
step "vgrpo data synth + a 2-step vgrpo train (examples/tiny.yaml)"
cp "$SRC/examples/tiny.yaml" tiny.yaml  # its data paths are relative to the YAML file
"$VG" data synth data/tiny --n 16 --tasks rec,ovd,count,math --seed 0 >synth.log 2>&1 \
    || { cat synth.log >&2; fail "\`vgrpo data synth\` failed"; }
for task in rec ovd count math; do
    [[ -s data/tiny/$task/train.jsonl ]] || fail "\`vgrpo data synth\` wrote no data/tiny/$task/train.jsonl"
done
"$VG" train tiny.yaml optim.max_steps=2 output_dir="$RUN/out" logging.tensorboard=false >train.log 2>&1 \
    || { tail -n 60 train.log >&2; fail "the 2-step \`vgrpo train\` failed (log tail above)"; }
"$PY" - out <<'PY' || { tail -n 30 train.log >&2; fail "the 2-step training left an incomplete run folder"; }
import json
import math
import sys
from pathlib import Path

out = Path(sys.argv[1])
if not (out / "metrics.jsonl").is_file():
    sys.exit(f"no {out}/metrics.jsonl; the run folder holds {sorted(p.name for p in out.iterdir())}")
rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
if [r.get("step") for r in rows] != [1, 2]:
    sys.exit(f"metrics.jsonl: expected steps [1, 2], got {[r.get('step') for r in rows]}")
for key in ("loss", "reward", "kl", "grad_norm", "lr", "completion_length"):
    if not all(isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) for r in rows):
        sys.exit(f"metrics.jsonl: {key!r} missing or not finite: {[r.get(key) for r in rows]}")
# per-task rows name the tasks the mixture sampled in that step
for r in rows:
    tasks = sorted(k.split("/")[1] for k in r if k.startswith("tasks/") and k.endswith("/reward"))
    if not tasks or not set(tasks) <= {"rec", "ovd", "count", "math"}:
        sys.exit(f"metrics.jsonl step {r['step']}: expected tasks/<task>/reward of the 4 tasks, got {tasks}")
checkpoint = out / "checkpoint-2"
if not checkpoint.is_dir():
    sys.exit(f"no {checkpoint}; the run folder holds {sorted(p.name for p in out.iterdir())}")
files = [p for p in checkpoint.rglob("*") if p.is_file()]
if not any(p.suffix == ".safetensors" for p in files):
    sys.exit(f"{checkpoint} holds no .safetensors: {sorted(p.name for p in files)}")
pickles = [p.name for p in files if p.suffix in {".pt", ".pth", ".bin", ".pkl", ".pickle"}]
if pickles:
    sys.exit(f"{checkpoint} holds pickles: {pickles}")
print(f"metrics.jsonl: steps 1-2, reward {[round(r['reward'], 3) for r in rows]}; {checkpoint.name}/ written")
PY

# --- 8. vgrpo new-plugin: the templates are package data; the package it writes installs and is listed ------
step "vgrpo new-plugin (task and --reward-only), then pip install of the task package"
"$VG" new-plugin acme.wheelcheck --dir "$RUN/new" >new-plugin.log 2>&1 \
    || { cat new-plugin.log >&2; fail "\`vgrpo new-plugin acme.wheelcheck\` failed"; }
"$VG" new-plugin acme.wheelcheck_reward --reward-only --dir "$RUN/new" >>new-plugin.log 2>&1 \
    || { cat new-plugin.log >&2; fail "\`vgrpo new-plugin --reward-only\` failed"; }
for f in vgrpo-acme-wheelcheck/{pyproject.toml,README.md,data/sample.jsonl,tests/test_acme_wheelcheck.py} \
    vgrpo-acme-wheelcheck/acme_wheelcheck/{__init__.py,task.py} \
    vgrpo-acme-wheelcheck-reward/{pyproject.toml,README.md,acme_wheelcheck_reward/rewards.py}; do
    [[ -s new/$f ]] || fail "\`vgrpo new-plugin\` did not write $f"
done
pip_install --no-build-isolation "$RUN/new/vgrpo-acme-wheelcheck[test]" \
    || fail "the package \`vgrpo new-plugin\` wrote does not pip-install (with its test extra)"
# its own tests use vgrpo.testing and the pytest11 fixtures of the installed vgrpo wheel
(cd "$RUN/new/vgrpo-acme-wheelcheck" && "$PY" -m pytest -q -p no:cacheprovider tests) >new-tests.log 2>&1 \
    || { tail -n 40 new-tests.log >&2; fail "the tests \`vgrpo new-plugin\` wrote fail on the wheels"; }
"$VG" --strict-plugins plugins --json >plugins-new.json || fail "\`vgrpo plugins\` fails with the new plugin"
"$PY" -c "
import json, sys
rows = {p['name']: p for p in json.load(open('plugins-new.json'))['plugins']}
sys.exit(0 if 'acme.wheelcheck' in rows.get('acme-wheelcheck', {}).get('tasks', []) else 1)" \
    || fail "the plugin \`vgrpo new-plugin\` wrote is installed but not listed with task acme.wheelcheck"

step "packaging check passed: ${#BUILT[@]} wheels ($(cd "$WHEELS" && echo *.whl))"
