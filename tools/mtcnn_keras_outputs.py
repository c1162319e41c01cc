"""Record the reference Keras networks' raw outputs on seeded random inputs (graph-parity fixture).

Runs in the same throwaway TensorFlow environment as `tools/mtcnn_reference.py`:

    /tmp/refenv/bin/python tools/mtcnn_keras_outputs.py tests/fixtures/mtcnn_keras_outputs.npz

Only the outputs are stored; the test regenerates the inputs from the same seed and checks their
hash first, so the fixture stays small and holds no image data.
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np

# (network, NHWC input shape): P-Net gets an odd, non-square size to exercise "same" pooling.
CASES = (("pnet", (2, 37, 51, 3)), ("rnet", (5, 24, 24, 3)), ("onet", (5, 48, 48, 3)))
SEED = 0


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {name: rng.uniform(-1, 1, size=shape).astype(np.float32) for name, shape in CASES}


def main(out_path: str) -> None:
    from mtcnn_reference import needs_tensorflow

    needs_tensorflow()
    from mtcnn.stages import StageONet, StagePNet, StageRNet

    stages = {"pnet": StagePNet, "rnet": StageRNet, "onet": StageONet}
    out = {}
    for name, x in inputs().items():
        out[f"{name}_input_sha256"] = np.frombuffer(hashlib.sha256(x.tobytes()).digest(), dtype=np.uint8)
        for i, y in enumerate(stages[name]().model(x)):
            out[f"{name}_output{i}"] = np.asarray(y, dtype=np.float32)
    np.savez_compressed(out_path, **out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out_path', help='the .npz fixture to write')
    args = parser.parse_args()
    main(args.out_path)
