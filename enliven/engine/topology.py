"""Named index groups of MediaPipe's 478-point face mesh (468 points + 10 iris points).

"Left" and "right" are the subject's own sides, as MediaPipe names them: the subject's
right eye (indices 33..133) appears on the image's left in an unmirrored photo.
Loops are ordered along the contour, so they can be drawn or filled as polygons.
"""
from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 478

FACE_OVAL = np.array([10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148,
                      152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251, 284, 332, 297, 338])
LIPS_OUTER = np.array([61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146])
LIPS_INNER = np.array([78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95])
# Inner lip contour split into upper and lower halves, paired column by column (corner 78/308 excluded).
LIPS_INNER_UPPER = np.array([191, 80, 81, 82, 13, 312, 311, 310, 415])
LIPS_INNER_LOWER = np.array([95, 88, 178, 87, 14, 317, 402, 318, 324])
RIGHT_EYE = np.array([33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7])
LEFT_EYE = np.array([263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249])
# Eyelids paired column by column (upper[i] closes onto lower[i]); corners excluded.
RIGHT_EYE_UPPER = np.array([246, 161, 160, 159, 158, 157, 173])
RIGHT_EYE_LOWER = np.array([7, 163, 144, 145, 153, 154, 155])
LEFT_EYE_UPPER = np.array([466, 388, 387, 386, 385, 384, 398])
LEFT_EYE_LOWER = np.array([249, 390, 373, 374, 380, 381, 382])
_LIDS_UPPER = np.concatenate([RIGHT_EYE_UPPER, LEFT_EYE_UPPER])  # both eyes' lids, for one pass over them
_LIDS_LOWER = np.concatenate([RIGHT_EYE_LOWER, LEFT_EYE_LOWER])
RIGHT_EYEBROW = np.array([46, 53, 52, 65, 55, 70, 63, 105, 66, 107])
LEFT_EYEBROW = np.array([276, 283, 282, 295, 285, 300, 293, 334, 296, 336])
RIGHT_IRIS = np.array([468, 469, 470, 471, 472])  # centre first
LEFT_IRIS = np.array([473, 474, 475, 476, 477])  # centre first
NOSE = np.array([168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 327, 129, 358, 64, 294])

# Points that move with the skull, not with expressions: forehead, nose bridge and tip,
# eye corners, temples and upper cheeks. Used for the rigid (similarity) pose fit.
RIGID = np.array([10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1,  # midline forehead and nose
                  33, 133, 263, 362,  # eye corners
                  127, 356, 234, 454, 162, 389, 21, 251,  # temples, cheek edges
                  109, 338, 67, 297, 103, 332, 54, 284,  # forehead arc
                  116, 345, 123, 352, 50, 280,  # upper cheeks
                  98, 327, 129, 358])  # nostrils

# Named single points.
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10
MOUTH_RIGHT_CORNER = 61
MOUTH_LEFT_CORNER = 291
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 33, 133
LEFT_EYE_OUTER, LEFT_EYE_INNER = 263, 362
RIGHT_CHEEK_EDGE, LEFT_CHEEK_EDGE = 234, 454

# The sparse set of points that drive the warp: contours of every moving part plus the nose.
# The irises are not in it: the warp places them itself, inside the eye (warp.Warper).
WARP_POINTS = np.unique(np.concatenate([
    FACE_OVAL, LIPS_OUTER, LIPS_INNER, RIGHT_EYE, LEFT_EYE, RIGHT_EYEBROW, LEFT_EYEBROW,
    NOSE, RIGID,
    [50, 280, 205, 425, 187, 411, 57, 287, 164, 18, 200, 199, 175],  # cheeks, chin column
]))


def eye_centers(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the subject's right and left eyes (mean of each eye contour).

    Args: points (478, D) float. Returns two (D,) arrays.
    """
    # = .mean(axis=0) (the same sum, then / count) without its Python-level dispatch: called a few times a frame
    return points[RIGHT_EYE].sum(axis=0) / len(RIGHT_EYE), points[LEFT_EYE].sum(axis=0) / len(LEFT_EYE)


def interocular_distance(points: np.ndarray) -> float:
    """Distance between the eye centres, in the units of ``points`` (2-D part only)."""
    right, left = eye_centers(points[:, :2])
    d = left - right
    return float(np.sqrt(d.dot(d)))  # = np.linalg.norm(d), as it computes a vector's norm


def mouth_opening(points: np.ndarray) -> float:
    """Mean gap between paired inner lip points, divided by the interocular distance.

    Args: points (478, D) float. Returns 0 for a closed mouth, about 0.5-0.8 wide open.
    """
    gap = np.linalg.norm(points[LIPS_INNER_LOWER, :2] - points[LIPS_INNER_UPPER, :2], axis=1)
    return float(gap.mean() / max(interocular_distance(points), 1e-6))


def eye_opening(points: np.ndarray) -> tuple[float, float]:
    """Mean lid gap of the right and left eyes, divided by the interocular distance."""
    iod = max(interocular_distance(points), 1e-6)
    # Both eyes' gaps in one pass: = np.linalg.norm(..., axis=1), then each half's mean (sum / count).
    d = points[_LIDS_LOWER, :2] - points[_LIDS_UPPER, :2]
    gaps = np.sqrt((d * d).sum(1))
    n = len(RIGHT_EYE_UPPER)
    return float(gaps[:n].sum() / n / iod), float(gaps[n:].sum() / n / iod)

# Skin around the mouth that moves with it: chin, the lower-lip skin and the upper-lip skin up to the nose.
MOUTH_SURROUND = np.array([152, 148, 176, 149, 150, 377, 400, 378, 379, 175, 199, 200, 18, 17, 83, 313, 201, 421,
                           32, 262])

# Eye corners (outer, inner) and iris centre of the subject's right and left eyes.
_EYE_CORNERS_AND_IRIS = ((RIGHT_EYE_OUTER, RIGHT_EYE_INNER, int(RIGHT_IRIS[0])),
                         (LEFT_EYE_INNER, LEFT_EYE_OUTER, int(LEFT_IRIS[0])))  # each pair ordered image-left first


def eye_frames(points: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Per eye (subject's right, then left): corner midpoint (2,), unit axis along the corners towards the
    image right (2,), unit axis across them, downwards (2,), and the corner distance (width, in the units of
    ``points``). Eye corners do not move in a blink, so neither does this frame."""
    out = []
    for a, b, _ in _EYE_CORNERS_AND_IRIS:
        left, right = points[a, :2].astype(np.float64), points[b, :2].astype(np.float64)
        span = right - left
        width = float(np.sqrt(span.dot(span)))  # = np.linalg.norm(span), as it computes it
        axis = span / max(width, 1e-9)
        out.append(((left + right) / 2, axis, np.array([-axis[1], axis[0]]), width))
    return out


def eye_gazes(points: np.ndarray) -> np.ndarray:
    """Where each iris sits in its eye: (2, 2) float64, rows (subject's right eye, left eye), columns (x, y).

    The iris centre's offset from the midpoint of the eye corners, along the corner line (x, towards the
    image right) and across it (y, down), in eye widths (corner distance). Looking straight ahead both are
    near 0; looking hard to one side x is about +-0.2.
    Args: points (478, D) float, D >= 2, any units (image pixels or a pose-free shape).
    """
    out = np.empty((2, 2))
    for k, ((mid, axis, down, width), (_, _, iris)) in enumerate(zip(eye_frames(points), _EYE_CORNERS_AND_IRIS,
                                                                      strict=True)):
        d = points[iris, :2].astype(np.float64) - mid
        out[k] = (d @ axis / max(width, 1e-9), d @ down / max(width, 1e-9))
    return out


def gaze(points: np.ndarray) -> np.ndarray:
    """Gaze of both eyes together: the mean of ``eye_gazes`` over the two eyes, (2,) float64 (x, y) in eye widths."""
    return eye_gazes(points).mean(axis=0)
