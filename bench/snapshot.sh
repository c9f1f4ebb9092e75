#!/bin/sh
# Freeze a commit of this repository's `murder` package for a side-by-side
# benchmark: bench/snapshot.sh REV DIR  ->  DIR/bin/murder, an executable for
# `bench/swarm.py --variant-command NAME=DIR/bin/murder`.
#
# Why: with the editable install, edits made while a benchmark runs leak into
# it; a snapshot does not move.  The snapshot is byte-compiled here because
# the benchmark's processes run with PYTHONDONTWRITEBYTECODE=1 on this
# machine: an uncompiled copy recompiles every module at every start (~0.3
# CPU-s a process, measured with cProfile: 1306 compile() calls in 17 peers),
# which is not what an installed package costs and skews the comparison.
# `python -P` keeps the current directory (maybe a checkout) off sys.path.
set -eu
rev=$1
dir=$(realpath -m "$2")
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
rm -rf "$dir"
mkdir -p "$dir/src" "$dir/bin"
git -C "$here" archive "$rev" murder | tar -x -C "$dir/src"
"$python" -m compileall -q "$dir/src" >/dev/null
cat > "$dir/bin/murder" <<EOS
#!/bin/sh
PYTHONPATH=$dir/src exec $python -P -c 'import sys; from murder.cli import main; sys.argv[0] = "murder"; sys.exit(main())' "\$@"
EOS
chmod +x "$dir/bin/murder"
echo "$dir/bin/murder"
