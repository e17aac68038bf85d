"""Data hooks for the activity-recognition TCN: windows of a phone's inertial sensors,
synthesised offline. No installable package ships a human-activity data set (UCI HAR,
WISDM and the like are downloads), so the signals are generated from the physics of
each activity, with labels that are true by construction:

- the accelerometer measures gravity (9.81 m/s^2) along the phone's orientation, which
  the posture sets (upright in a pocket while standing or walking, tilted while
  sitting, horizontal while lying) with a per-window random tilt;
- walking adds the gait: a vertical bounce at the step frequency (1.6-2.1 Hz) and its
  harmonics, a forward sway at the stride frequency (half of it); upstairs is slower
  with a larger bounce, downstairs faster with sharper heel strikes (more harmonics);
- the gyroscope sees the pelvis's rotation at the stride frequency while walking, and a
  slow postural sway otherwise;
- every channel carries sensor noise and a small bias.

Windows are 128 samples at 50 Hz (2.56 s), as in UCI HAR. Each split is drawn from its
own seed, so evaluation, calibration and training windows are all different."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

FS = 50.0
WINDOW = 128
G = 9.81
ACTIVITIES = ("walking", "walking_upstairs", "walking_downstairs", "sitting", "standing", "lying")


def _rotation(rng: np.random.Generator, tilt_deg: float) -> np.ndarray:
    """A random rotation by up to tilt_deg about a random horizontal axis, then a random
    heading: how the phone happens to sit in a pocket."""
    axis = np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a), 0.0])
    angle = np.deg2rad(rng.uniform(-tilt_deg, tilt_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    tilt = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    h = rng.uniform(0, 2 * np.pi)
    heading = np.array([[np.cos(h), -np.sin(h), 0], [np.sin(h), np.cos(h), 0], [0, 0, 1]])
    return heading @ tilt


def window(activity: int, rng: np.random.Generator) -> np.ndarray:
    """float32 6 x 128: accelerometer xyz (m/s^2), gyroscope xyz (rad/s)."""
    t = np.arange(WINDOW) / FS
    name = ACTIVITIES[activity]
    acc = np.zeros((3, WINDOW))
    gyro = np.zeros((3, WINDOW))
    # Gravity in the body frame (z up): the posture decides where it points.
    posture = {"sitting": np.deg2rad(rng.uniform(35, 60)), "lying": np.deg2rad(rng.uniform(80, 100))}.get(name, 0.0)
    gravity = G * np.array([0.0, np.sin(posture), np.cos(posture)])
    acc += gravity[:, None]
    if name.startswith("walking"):
        step = {"walking": rng.uniform(1.6, 2.1), "walking_upstairs": rng.uniform(1.3, 1.7),
                "walking_downstairs": rng.uniform(1.9, 2.4)}[name]
        bounce = {"walking": rng.uniform(1.5, 3.0), "walking_upstairs": rng.uniform(2.5, 4.0),
                  "walking_downstairs": rng.uniform(3.0, 5.0)}[name]
        harmonics = {"walking": 2, "walking_upstairs": 2, "walking_downstairs": 4}[name]
        phase = rng.uniform(0, 2 * np.pi)
        for h in range(1, harmonics + 1):
            acc[2] += bounce / h ** 1.2 * np.sin(2 * np.pi * h * step * t + h * phase)
        forward = 0.4 * bounce * np.sin(np.pi * step * t + phase)
        acc[0] += forward + (0.8 if name == "walking_upstairs" else -0.6 if name == "walking_downstairs" else 0.0)
        acc[1] += 0.3 * bounce * np.sin(np.pi * step * t + phase + np.pi / 2)
        gyro[0] += rng.uniform(0.3, 0.8) * np.sin(np.pi * step * t + phase)
        gyro[1] += rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * step * t + phase)
        gyro[2] += rng.uniform(0.3, 1.0) * np.sin(np.pi * step * t + phase + 0.5)
    else:
        sway = rng.uniform(0.1, 0.4) if name == "standing" else rng.uniform(0.02, 0.1)
        f = rng.uniform(0.2, 0.6)
        acc[0] += sway * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        gyro += 0.3 * sway * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, (3, 1)))
    rotation = _rotation(rng, tilt_deg=15.0)
    acc = rotation @ acc
    gyro = rotation @ gyro
    acc += rng.normal(0, 0.05, 3)[:, None] + rng.normal(0, 0.12, acc.shape)
    gyro += rng.normal(0, 0.01, 3)[:, None] + rng.normal(0, 0.02, gyro.shape)
    return np.concatenate([acc, gyro]).astype(np.float32)


def windows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(ACTIVITIES)
    rng.shuffle(labels)
    return np.stack([window(int(a), rng) for a in labels]), labels.astype(np.int64)


@lru_cache(maxsize=3)
def _split(n: int, seed: int):
    return windows(n, seed)


def evaluation():
    """360 windows, 60 per activity."""
    x, y = _split(360, 1)
    return x.copy(), y.copy()


def calibration():
    """240 windows of their own."""
    x, y = _split(240, 2)
    return x.copy(), y.copy()


def training():
    """2400 windows, for prepare.py and for fine-tuning stages."""
    x, y = _split(2400, 3)
    return x.copy(), y.copy()
