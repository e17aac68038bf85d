"""Train the Keras digits sample deterministically and write digits.keras.

    python samples/keras_digits/train.py      # about 20 s on 2 cores; needs edgepack[keras]

A small mobile-style CNN (convolution, depthwise-separable blocks, global pooling) in
Keras 3 on TensorFlow, trained with fixed seeds, deterministic ops and one thread.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data import evaluation, training  # noqa: E402

EPOCHS = 60
BATCH = 64


def build_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    for filters, stride in ((64, 2), (96, 1), (128, 2)):
        x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU(6.0)(x)
        x = keras.layers.Conv2D(filters, 1, use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits")


def main() -> None:
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    x, y = training()
    xt, yt = evaluation()
    model = build_model()
    steps = EPOCHS * ((len(x) + BATCH - 1) // BATCH)
    schedule = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(xt, verbose=0), 1) == yt))
    out = HERE / "digits.keras"
    model.save(out)
    print(f"test accuracy {accuracy:.4f} on {len(xt)} images; {time.perf_counter() - start:.1f} s; wrote {out}")


if __name__ == "__main__":
    main()
