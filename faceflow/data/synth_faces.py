"""Procedural 112x112 RGB faces drawn with vectorised numpy: identity parameters fix the structure
(face shape, eye/nose/mouth geometry, skin/hair/iris/lip colour, hair style, skin texture, marks);
nuisance parameters vary each image (pose, scale, yaw, lighting, background, expression, age drift,
occlusion, noise; blur is applied by the caller while encoding).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

SIZE = 112
N_TEXTURE = 3

_HAIR_PALETTE = np.array(
    [
        [22, 18, 18], [55, 36, 24], [100, 64, 36], [140, 62, 30], [205, 170, 100],
        [185, 92, 40], [150, 148, 145], [228, 224, 214], [45, 65, 150], [120, 45, 125],
        [215, 105, 150], [40, 110, 80],
    ],
    dtype=np.float32,
)
_IRIS_PALETTE = np.array(
    [[70, 42, 22], [30, 22, 18], [60, 110, 170], [70, 130, 80], [120, 120, 130], [150, 110, 40]],
    dtype=np.float32,
)
_SKIN_DARK = np.array([92, 58, 40], dtype=np.float32)
_SKIN_LIGHT = np.array([246, 208, 182], dtype=np.float32)
_GREY_HAIR = np.array([182, 180, 176], dtype=np.float32)


def sample_identity(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Structural parameters of one identity (a dict of float32 arrays; colours are RGB 0..255)."""
    u = rng.uniform
    p: dict[str, np.ndarray] = {}
    p["face_a"] = u(29, 40)
    p["face_b"] = u(40, 50)
    p["face_p"] = u(1.9, 3.4)
    p["jaw"] = u(0.0, 0.4)
    t = u(0, 1)
    p["skin"] = (1 - t) * _SKIN_DARK + t * _SKIN_LIGHT + rng.normal(0, 10, 3)
    p["hair"] = _HAIR_PALETTE[rng.integers(len(_HAIR_PALETTE))] + rng.normal(0, 14, 3)
    p["hair_a"] = u(1.02, 1.3)
    p["hair_b"] = u(1.0, 1.25)
    p["hairline"] = u(0.35, 0.85)
    p["fringe"] = u(-0.02, 0.025)
    p["parting"] = u(-0.6, 0.6)
    p["hair_long"] = u(0, 1) * (u(0, 1) < 0.45)
    p["ear"] = u(6.5, 11)
    p["eye_dx"] = u(12, 20)
    p["eye_v"] = u(-12, -3)
    p["eye_a"] = u(5, 8.5)
    p["eye_b"] = u(2.4, 4.6)
    p["eye_tilt"] = u(-0.18, 0.18)
    p["iris"] = _IRIS_PALETTE[rng.integers(len(_IRIS_PALETTE))] + rng.normal(0, 10, 3)
    p["iris_r"] = u(0.45, 0.7)
    p["brow_dv"] = u(5, 9)
    p["brow_t"] = u(1.3, 3.6)
    p["brow_len"] = u(1.0, 1.5)
    p["brow_angle"] = u(-0.35, 0.3)
    p["nose_len"] = u(7, 17)
    p["nose_w"] = u(3.5, 8)
    p["nose_dark"] = u(0.12, 0.35)
    p["mouth_v"] = u(19, 29)
    p["mouth_w"] = u(8, 16)
    p["lip_t"] = u(1.6, 4.0)
    p["lip"] = p["skin"] * np.array([0.85, 0.5, 0.52]) + rng.normal(0, 12, 3)
    p["smile"] = u(-0.015, 0.03)
    p["tex_f"] = u(0.15, 0.55, (N_TEXTURE, 2)) * rng.choice([-1, 1], (N_TEXTURE, 2))
    p["tex_ph"] = u(0, 2 * np.pi, N_TEXTURE)
    p["tex_amp"] = u(0.0, 0.1) * np.ones(N_TEXTURE) / N_TEXTURE
    p["frk_phase"] = u(0, 2 * np.pi, 2)
    p["freckles"] = u(0.5, 0.8) * (u(0, 1) < 0.45)
    p["mole_u"] = u(-22, 22)
    p["mole_v"] = u(-20, 30)
    p["mole_on"] = float(u(0, 1) < 0.35)
    p["beard"] = u(0.45, 0.95) * (u(0, 1) < 0.3)
    p["blush"] = u(0, 0.22)
    return {k: np.asarray(v, dtype=np.float32) for k, v in p.items()}


def stack_identities(params: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-image identity dicts into batch arrays (leading axis = image)."""
    return {k: np.stack([p[k] for p in params]) for k in params[0]}


def sample_nuisance(rng: np.random.Generator, n: int, profile: str = "frontal", age: tuple[float, float] = (0.0, 0.0)) -> dict[str, np.ndarray]:
    """Per-image nuisance for `n` images; `profile` is 'frontal', 'mixed' (training) or 'profile'."""
    u = rng.uniform
    q: dict[str, np.ndarray] = {}
    q["tx"], q["ty"] = u(-6, 6, n), u(-6, 6, n)
    q["rot"] = np.clip(rng.normal(0, 0.13, n), -0.26, 0.26)
    q["scale"] = u(0.88, 1.12, n)
    side = rng.choice([-1.0, 1.0], n)
    if profile == "frontal":
        q["yaw"] = u(-0.28, 0.28, n)
    elif profile == "profile":
        q["yaw"] = side * u(0.55, 0.9, n)
    elif profile == "mixed":
        q["yaw"] = np.where(u(0, 1, n) < 0.3, side * u(0.3, 0.9, n), u(-0.28, 0.28, n))
    else:
        raise ValueError(f"profile: expected frontal, mixed or profile, got {profile!r}")
    q["gain"] = u(0.8, 1.16, n)
    q["grad"] = u(0.0, 0.5, n)[:, None] * _unit(rng, n)
    q["cast"] = u(-0.035, 0.035, (n, 3))
    q["gamma"] = u(0.9, 1.1, n)
    q["bg0"], q["bg1"] = u(0, 255, (n, 3)), u(0, 255, (n, 3))
    q["bg_dir"] = _unit(rng, n)
    q["smile"] = u(-0.025, 0.05, n)
    q["mouth_open"] = u(0, 4.5, n) * (u(0, 1, n) < 0.4)
    q["brow_up"] = u(-1.0, 3.0, n)
    q["eye_open"] = np.where(u(0, 1, n) < 0.12, u(0.1, 0.4, n), u(0.75, 1.05, n))
    q["age"] = u(age[0], age[1], n)
    q["occ_kind"] = rng.choice([0, 1, 2], n, p=[0.8, 0.12, 0.08])  # none, block, sunglasses
    q["occ_box"] = np.stack([u(-50, 25, n), u(-45, 25, n), u(18, 45, n), u(14, 36, n)], axis=1)
    q["occ_col"] = u(0, 255, (n, 3))
    q["noise"] = u(1.0, 7.0, n)
    q["blur"] = np.where(u(0, 1, n) < 0.4, u(0.3, 1.3, n), 0.0)
    return {k: np.asarray(v, dtype=np.float32) for k, v in q.items()}


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random 2-D unit vectors (gradient directions)."""
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


def _b(x: np.ndarray) -> np.ndarray:
    """Per-image scalars -> (B,1,1) for broadcasting over the pixel grid."""
    return x[:, None, None]


def _sat(x: np.ndarray) -> np.ndarray:
    """Clip a temporary array to [0, 1] in place."""
    return np.clip(x, 0.0, 1.0, out=x)


def _ellipse(u: np.ndarray, v: np.ndarray, cu, cv, a, b) -> np.ndarray:
    """Soft (about 1 px edge) coverage of an axis-aligned ellipse."""
    r2 = np.square((u - cu) / a)
    r2 += np.square((v - cv) / b)
    return _sat((1.0 - r2) * (np.minimum(a, b) * 0.5))


def _paint(img: np.ndarray, mask: np.ndarray, colour) -> None:
    """Alpha-blend a per-image colour (B,3) into img (B,3,H,W) where mask (B,H,W) covers."""
    colour = np.broadcast_to(np.asarray(colour, np.float32), (len(img), 3))
    diff = colour[:, :, None, None] - img
    diff *= mask[:, None]
    img += diff


def _grid(res: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a res x res grid covering `size` pixels (112-pixel units), centred on the image."""
    axis = (np.arange(res, dtype=np.float32) - (res - 1) / 2.0) * np.float32(size / res)
    return axis[None, None, :], axis[None, :, None]


def render_faces(ident: dict[str, np.ndarray], nuis: dict[str, np.ndarray], rng: np.random.Generator, res: int = 64,
                 size: int = SIZE) -> np.ndarray:
    """Draw a batch of faces at res x res, upsample to `size` and add sensor noise; uint8 (B, size, size, 3).

    The face is as large as in a 112 x 112 image: a larger `size` shows more of its surroundings (the loose crops
    of the synthetic IJB set). Blur is left to the encoder (PIL).
    """
    small = _draw(ident, nuis, res, size)
    if res != size:
        small = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in small])
    noisy = small.astype(np.float32)
    noisy += _noise(rng, len(noisy), size) * nuis["noise"][:, None, None, None]
    noisy += 0.5
    return np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)


# depth of each landmark's drawing layer (`layer_u` in _draw): eyes, nose, mouth corners
_LANDMARK_DEPTH = np.array([16.0, 16.0, 24.0, 18.0, 18.0], np.float32)


def face_landmarks(ident: dict[str, np.ndarray], nuis: dict[str, np.ndarray], size: int = SIZE) -> np.ndarray:
    """The five InsightFace landmarks (B, 5, 2) of the faces `render_faces` draws at `size`: iris centres, the
    nose tip between the nostrils, the mouth corners; (x, y) pixels, left/right as seen in the image."""
    eye_u, eye_v = ident["eye_dx"], ident["eye_v"]
    nose_v = eye_v + ident["nose_len"] + 5.0
    mouth_u = ident["mouth_w"] - 0.7  # where the lips' coverage falls to one half
    mouth_v = ident["mouth_v"] - (ident["smile"] + nuis["smile"]) * np.square(mouth_u)
    zero = np.zeros_like(eye_u)
    u = np.stack([-eye_u, eye_u, zero, -mouth_u, mouth_u], axis=1)
    v = np.stack([eye_v, eye_v, nose_v, mouth_v, mouth_v], axis=1)
    yaw = nuis["yaw"][:, None]
    u0 = u * (0.55 + 0.45 * np.cos(yaw)) + np.sin(yaw) * _LANDMARK_DEPTH
    c, s, sc = (x[:, None] for x in (np.cos(nuis["rot"]), np.sin(nuis["rot"]), nuis["scale"]))
    centre = (size - 1) / 2.0
    x = sc * (c * u0 - s * v) + nuis["tx"][:, None] + centre
    y = sc * (s * u0 + c * v) + nuis["ty"][:, None] + centre
    return np.stack([x, y], axis=2).astype(np.float32)


def _noise(rng: np.random.Generator, n: int, size: int = SIZE) -> np.ndarray:
    """Unit Gaussian noise (n, size, size, 3): random crops of a small bank (cheaper than fresh draws)."""
    bank = rng.standard_normal((4, size + 48, size + 48, 3), dtype=np.float32)
    pick, oy, ox = rng.integers(0, 4, n), rng.integers(0, 48, n), rng.integers(0, 48, n)
    return np.stack([bank[k, y:y + size, x:x + size] for k, y, x in zip(pick, oy, ox)])


def _draw(ident: dict[str, np.ndarray], nuis: dict[str, np.ndarray], res: int, size: int = SIZE) -> np.ndarray:
    """The face drawing proper: uint8 (B, res, res, 3) without noise."""
    px, py = _grid(res, size)
    n = len(nuis["tx"])
    age = nuis["age"]
    c, s, sc = np.cos(nuis["rot"]), np.sin(nuis["rot"]), nuis["scale"]
    dx, dy = px - _b(nuis["tx"]), py - _b(nuis["ty"])
    u0 = (_b(c / sc) * dx + _b(s / sc) * dy)
    v = (-_b(s / sc) * dx + _b(c / sc) * dy)
    syaw, cyaw = np.sin(nuis["yaw"]), np.cos(nuis["yaw"])

    def layer_u(depth: float) -> np.ndarray:
        return (u0 - _b(syaw * depth)) * _b(1.0 / (0.55 + 0.45 * cyaw))

    # background: two-colour linear gradient
    t = _sat(0.5 + (_b(nuis["bg_dir"][:, 0]) * px + _b(nuis["bg_dir"][:, 1]) * py) / SIZE)
    img = nuis["bg0"][:, :, None, None] + t[:, None] * (nuis["bg1"] - nuis["bg0"])[:, :, None, None]
    img = np.ascontiguousarray(img, dtype=np.float32)

    fa, fb = ident["face_a"], ident["face_b"]
    hair = ident["hair"] + (_GREY_HAIR - ident["hair"]) * (0.75 * age)[:, None]
    skin = ident["skin"] * (1.0 - 0.06 * age)[:, None]
    fcv = 4.0
    # hair behind the head (long hair reaches the shoulders)
    uh = layer_u(-6.0)
    long_len = _b(-8.0 + 70.0 * ident["hair_long"])
    back = _ellipse(uh, v, 0.0, fcv - 8.0, _b(fa * ident["hair_a"]) + 2, _b(fb * ident["hair_b"]) + 4)
    back *= _sat((long_len - v) * 0.5)
    top = _ellipse(uh, v, 0.0, fcv - 0.25 * _b(fb), _b(fa * ident["hair_a"]), _b(fb * ident["hair_b"] * 0.8))
    _paint(img, np.maximum(back, top), hair * 0.85)
    # neck and ears
    uf = layer_u(3.0)
    neck = _sat((_b(fa * 0.55) - np.abs(uf)) * 0.5) * _sat((v - fcv) * 0.5)
    _paint(img, neck, skin * 0.8)
    ear = _ellipse(np.abs(layer_u(-14.0)), v, _b(fa * 0.97), fcv - 4.0, _b(ident["ear"] * 0.6), _b(ident["ear"]))
    _paint(img, ear, skin * 0.9)
    # face: superellipse with a tapering jaw and a skin texture of sines
    vn = (v - fcv) / _b(fb)
    a_eff = _b(fa) * (1.0 - _b(ident["jaw"]) * np.square(_sat(vn.copy())))
    fp = _b(ident["face_p"])
    r = np.power(np.abs(uf / a_eff), fp) + np.power(np.abs(vn), fp)
    face = _sat((1.0 - r) * _b(fa * 0.4))
    tex = np.ones_like(v)
    for k in range(N_TEXTURE):
        tex += _b(ident["tex_amp"][:, k]) * np.sin(
            _b(ident["tex_f"][:, k, 0]) * uf + _b(ident["tex_f"][:, k, 1]) * v + _b(ident["tex_ph"][:, k]))
    img += face[:, None] * (skin[:, :, None, None] * tex[:, None] - img)
    # marks on the inner face: blush, a freckle pattern on the cheeks, a mole, age wrinkles
    ui = layer_u(16.0)
    aui = np.abs(ui)
    eye_v = _b(ident["eye_v"])
    cheek = _ellipse(aui, v, _b(ident["eye_dx"] + 3), eye_v + 12, 10.0, 7.0) * face
    _paint(img, cheek * _b(ident["blush"]), (220, 70, 80))
    dots = _sat((np.sin(ui * 1.1 + _b(ident["frk_phase"][:, 0])) * np.sin(v * 1.1 + _b(ident["frk_phase"][:, 1])) - 0.7) * 5.0)
    _paint(img, dots * cheek * _b(ident["freckles"]), skin * 0.62)
    mole = _ellipse(ui, v, _b(ident["mole_u"]), _b(ident["mole_v"]), 2.0, 2.0) * face
    wrinkles = _sat(np.sin(v * 1.3) * 2 - 1.2) * _sat((eye_v - 8 - v) * 0.3) * face * _b(np.clip(age - 0.3, 0, 1))
    _paint(img, np.maximum(mole * _b(ident["mole_on"]), wrinkles), skin * 0.45)
    # beard: lower face in hair colour, faded by density
    mouth_v = _b(ident["mouth_v"])
    _paint(img, face * _sat((v - mouth_v + 7) * 0.4) * _b(ident["beard"]), hair)
    # hair on top: inside the hair ellipse, above a curved hairline with a parting
    hairline = _b(fcv - fb * ident["hairline"] - 6 * age) + _b(ident["fringe"]) * np.square(uh - _b(ident["parting"] * fa * 0.5))
    top *= _sat((hairline - v) * 0.6)
    _paint(img, top, hair)
    # eyebrows and eyes (sclera, iris, pupil, lid line); both sides at once through |u|
    ea, eb = _b(ident["eye_a"]), _b(ident["eye_b"])
    side = np.where(ui >= 0, np.float32(1), np.float32(-1))
    du = (aui - _b(ident["eye_dx"])) / (1.0 - 0.45 * side * _b(syaw))
    dv = v - eye_v
    dv_t = dv + _b(ident["eye_tilt"]) * du
    bdv = dv + _b(ident["brow_dv"] + nuis["brow_up"]) + _b(ident["brow_angle"]) * du
    brow = _sat((_b(ident["brow_t"]) - np.abs(bdv)) * 0.8) * _sat((ea * _b(ident["brow_len"]) - np.abs(du)) * 0.8)
    _paint(img, brow, hair * 0.7)
    open_b = eb * _b(nuis["eye_open"]) + 0.3
    r2 = np.square(du / ea) + np.square(dv_t / open_b)
    sclera = _sat((1.0 - r2) * 2.0)
    _paint(img, sclera, (238, 236, 230))
    rho2 = np.square(du) + np.square(dv_t)
    iris_r = eb * _b(ident["iris_r"]) * 2.0
    _paint(img, _sat((np.square(iris_r) - rho2) * 0.5) * sclera, ident["iris"])
    _paint(img, _sat((np.square(eb * 0.5) - rho2) * 0.8) * sclera, (0, 0, 0))
    lid = _sat(1.0 - np.abs(np.sqrt(r2) - 1.0) * 4.0)
    _paint(img, lid * 0.8, skin * 0.45)
    # nose: shaded bridge and two nostrils
    un = layer_u(24.0)
    nose_bot = eye_v + _b(ident["nose_len"]) + 6
    bridge = _sat((_b(ident["nose_w"]) * 0.35 - np.abs(un - 1.5)) * 0.6) * _sat((v - eye_v - 2) * 0.3) * _sat((nose_bot - v) * 0.5)
    _paint(img, bridge * _b(ident["nose_dark"]), skin * 0.6)
    nostril = _ellipse(np.abs(un), v, _b(ident["nose_w"]) * 0.5, nose_bot, 1.9, 1.3)
    _paint(img, nostril * 0.8, skin * 0.35)
    # mouth: lips between two parabolas, dark gap when open
    um = layer_u(18.0)
    mw = _b(ident["mouth_w"])
    dvm = np.abs(v - mouth_v + _b(ident["smile"] + nuis["smile"]) * np.square(um))
    half_gap = _b(nuis["mouth_open"] * 0.5) * _sat(1 - np.square(um / mw))
    inside = _sat((mw - np.abs(um)) * 0.7)
    _paint(img, inside * _sat((_b(ident["lip_t"]) + half_gap - dvm) * 0.8), ident["lip"])
    _paint(img, inside * _sat((half_gap - dvm) * 0.8), (35, 35, 35))
    # lighting: gain, directional gradient, colour cast, gamma
    light = _b(nuis["gain"]) * (1.0 + (_b(nuis["grad"][:, 0]) * px + _b(nuis["grad"][:, 1]) * py) / 56.0)
    img *= light[:, None] * (1.0 + nuis["cast"])[:, :, None, None] / 255.0
    img = 255.0 * np.power(np.clip(img, 0, 1, out=img), nuis["gamma"][:, None, None, None])
    _occlude(img, ident, nuis, px, py, ui, v, aui)
    img += 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8).transpose(0, 2, 3, 1)


def _occlude(img, ident, nuis, px, py, ui, v, aui) -> None:
    """Occlusion on the images that have one: a random block, or sunglasses over the eyes."""
    blocks = np.flatnonzero(nuis["occ_kind"] == 1)
    if len(blocks):
        x0, y0, w, h = (nuis["occ_box"][blocks, i] for i in range(4))
        box = (_sat((px - _b(x0)) * 0.7) * _sat((_b(x0 + w) - px) * 0.7)
               * _sat((py - _b(y0)) * 0.7) * _sat((_b(y0 + h) - py) * 0.7))
        sub = img[blocks]
        _paint(sub, box, nuis["occ_col"][blocks])
        img[blocks] = sub
    shades = np.flatnonzero(nuis["occ_kind"] == 2)
    if len(shades):
        eye_v = _b(ident["eye_v"][shades])
        lens = _ellipse(aui[shades], v[shades], _b(ident["eye_dx"][shades]), eye_v,
                        _b(ident["eye_a"][shades]) + 3.5, _b(ident["eye_b"][shades]) + 4.0)
        bar = _sat((1.2 - np.abs(v[shades] - eye_v + 1)) * 0.8) * (aui[shades] < _b(ident["eye_dx"][shades]))
        sub = img[shades]
        _paint(sub, np.maximum(lens, bar), nuis["occ_col"][shades] * 0.25)
        img[shades] = sub
