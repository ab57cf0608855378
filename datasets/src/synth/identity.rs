//! What makes one synthetic person: head geometry, skin, hair, eyes, brows, nose, mouth, ears and a few
//! rarer marks (beard, glasses, mole), drawn once per identity from its own stream. Coordinates are the
//! canonical face frame: x right, y down, the aligned crop spanning [-1, 1] in both.
//!
//! These parameters carry identity; they are chosen wide and numerous (about 35 continuous values and
//! seven discrete ones) so that two random identities differ in several clearly visible ways, which is
//! what makes the task learnable although per-image nuisance dominates the raw pixels.

use super::rng::SynthRng;

pub type Rgb = [f32; 3];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HairStyle {
    Bald,
    Short,
    Long,
    Fringe,
    SidePart,
    Curly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beard {
    None,
    Moustache,
    Goatee,
    Full,
}

#[derive(Debug, Clone, Copy)]
pub struct Glasses {
    /// Lens half-size around each eye centre.
    pub radius: f32,
    /// 2 = round, larger = squarer frames (superellipse exponent).
    pub squareness: f32,
    pub thickness: f32,
    pub color: Rgb,
}

#[derive(Debug, Clone, Copy)]
pub struct Mole {
    pub x: f32,
    pub y: f32,
    pub radius: f32,
}

/// A birthmark: an elliptical patch of darker or redder skin.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub x: f32,
    pub y: f32,
    pub rx: f32,
    pub ry: f32,
    pub color: Rgb,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub head_w: f32,
    pub head_h: f32,
    pub head_cy: f32,
    /// How much the lower face narrows towards the chin.
    pub jaw_taper: f32,
    pub skin: Rgb,
    pub blush: f32,
    pub hair_style: HairStyle,
    pub hair: Rgb,
    /// Hairline height at the centre of the forehead.
    pub hairline: f32,
    /// Extra hair volume around the skull.
    pub hair_volume: f32,
    /// Lowest point of long hair, or the wave count of a fringe.
    pub hair_length: f32,
    /// Side-parting slope / fringe wave phase.
    pub hair_tilt: f32,
    pub eye_dx: f32,
    pub eye_y: f32,
    pub eye_w: f32,
    pub eye_h: f32,
    pub eye_tilt: f32,
    pub iris: Rgb,
    pub brow_gap: f32,
    pub brow_thick: f32,
    pub brow_len: f32,
    pub brow_slope: f32,
    pub brow_arch: f32,
    pub brow: Rgb,
    pub nose_top: f32,
    pub nose_y: f32,
    pub nose_w: f32,
    pub nose_height: f32,
    pub mouth_y: f32,
    pub mouth_w: f32,
    pub lip_upper: f32,
    pub lip_lower: f32,
    pub lip: Rgb,
    pub resting_smile: f32,
    pub ear_size: f32,
    pub ear_y: f32,
    pub beard: Beard,
    pub beard_color: Rgb,
    pub glasses: Option<Glasses>,
    pub mole: Option<Mole>,
    pub mark: Option<Mark>,
}

fn lerp3(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn jitter(c: Rgb, rng: &mut SynthRng, m: f32) -> Rgb {
    let g = 1.0 + rng.sym(m);
    [
        (c[0] * g * (1.0 + rng.sym(m * 0.4))).clamp(0.02, 1.0),
        (c[1] * g * (1.0 + rng.sym(m * 0.4))).clamp(0.02, 1.0),
        (c[2] * g * (1.0 + rng.sym(m * 0.4))).clamp(0.02, 1.0),
    ]
}

/// A point on a light-to-dark skin ramp.
fn skin_tone(t: f32) -> Rgb {
    const RAMP: [Rgb; 5] =
        [[0.97, 0.82, 0.72], [0.87, 0.66, 0.52], [0.74, 0.53, 0.38], [0.55, 0.37, 0.25], [0.34, 0.23, 0.16]];
    let x = t.clamp(0.0, 0.999) * (RAMP.len() - 1) as f32;
    let i = x as usize;
    lerp3(RAMP[i], RAMP[i + 1], x - i as f32)
}

fn pick<T: Copy>(rng: &mut SynthRng, items: &[T]) -> T {
    items[rng.below(items.len())]
}

impl Identity {
    pub fn sample(rng: &mut SynthRng) -> Identity {
        let head_w = rng.range(0.48, 0.70);
        let head_h = rng.range(0.68, 0.90);
        let head_cy = rng.range(0.02, 0.12);
        let skin = jitter(skin_tone(rng.unit()), rng, 0.06);
        let hair_style = pick(
            rng,
            &[
                HairStyle::Bald,
                HairStyle::Short,
                HairStyle::Short,
                HairStyle::Long,
                HairStyle::Long,
                HairStyle::Fringe,
                HairStyle::SidePart,
                HairStyle::Curly,
            ],
        );
        let hair_base = pick(
            rng,
            &[
                [0.07, 0.06, 0.06],
                [0.22, 0.14, 0.09],
                [0.42, 0.28, 0.16],
                [0.55, 0.24, 0.10],
                [0.86, 0.72, 0.45],
                [0.62, 0.62, 0.62],
                [0.90, 0.89, 0.86],
                [0.30, 0.12, 0.45],
                [0.10, 0.45, 0.50],
                [0.85, 0.40, 0.60],
            ],
        );
        let hair = jitter(hair_base, rng, 0.15);
        let eye_h = rng.range(0.04, 0.07);
        let iris = jitter(
            pick(
                rng,
                &[
                    [0.33, 0.19, 0.09],
                    [0.13, 0.09, 0.07],
                    [0.30, 0.50, 0.78],
                    [0.30, 0.52, 0.32],
                    [0.50, 0.56, 0.62],
                    [0.52, 0.40, 0.18],
                ],
            ),
            rng,
            0.1,
        );
        let brow_dark = rng.range(0.45, 0.9);
        let brow = if hair_style == HairStyle::Bald {
            lerp3(skin, [0.1, 0.08, 0.07], brow_dark)
        } else {
            lerp3(hair, [0.05, 0.04, 0.04], brow_dark * 0.5)
        };
        let lip = jitter([skin[0] * 0.82, skin[1] * 0.52, skin[2] * 0.55], rng, 0.12);
        let beard = if rng.chance(0.3) {
            pick(rng, &[Beard::Moustache, Beard::Goatee, Beard::Full])
        } else {
            Beard::None
        };
        let beard_color = if rng.chance(0.8) { hair } else { jitter([0.15, 0.12, 0.1], rng, 0.2) };
        let glasses = rng.chance(0.22).then(|| Glasses {
            radius: rng.range(0.09, 0.14),
            squareness: pick(rng, &[2.0, 3.0, 6.0]),
            thickness: rng.range(0.010, 0.028),
            color: jitter(
                pick(
                    rng,
                    &[
                        [0.05, 0.05, 0.05],
                        [0.45, 0.25, 0.10],
                        [0.75, 0.70, 0.55],
                        [0.6, 0.1, 0.1],
                        [0.1, 0.2, 0.5],
                    ],
                ),
                rng,
                0.1,
            ),
        });
        let mole = rng.chance(0.3).then(|| Mole {
            x: rng.sym(0.35),
            y: rng.range(-0.05, 0.55),
            radius: rng.range(0.014, 0.028),
        });
        let mark = rng.chance(0.45).then(|| {
            let tone = pick(rng, &[[0.62, 0.42, 0.42], [0.55, 0.45, 0.38], [0.85, 0.55, 0.5]]);
            Mark {
                x: rng.sym(0.4),
                y: rng.range(-0.45, 0.6),
                rx: rng.range(0.03, 0.08),
                ry: rng.range(0.02, 0.06),
                color: [skin[0] * tone[0], skin[1] * tone[1], skin[2] * tone[2]],
            }
        });
        let eye_dx = rng.range(0.17, 0.29);
        Identity {
            head_w,
            head_h,
            head_cy,
            jaw_taper: rng.range(0.0, 0.38),
            skin,
            blush: rng.range(0.0, 0.25),
            hair_style,
            hair,
            hairline: rng.range(-0.62, -0.38),
            hair_volume: rng.range(0.02, 0.12),
            hair_length: rng.range(0.3, 1.0),
            hair_tilt: rng.sym(0.5),
            eye_dx,
            eye_y: rng.range(-0.16, 0.0),
            eye_w: rng.range(0.08, 0.13),
            eye_h,
            eye_tilt: rng.sym(0.22),
            iris,
            brow_gap: rng.range(0.07, 0.14),
            brow_thick: rng.range(0.014, 0.06),
            brow_len: rng.range(0.08, 0.14),
            brow_slope: rng.sym(0.25),
            brow_arch: rng.range(0.0, 0.04),
            brow,
            nose_top: rng.range(-0.05, 0.05),
            nose_y: rng.range(0.17, 0.32),
            nose_w: rng.range(0.045, 0.10),
            nose_height: rng.range(0.03, 0.09),
            mouth_y: rng.range(0.40, 0.55),
            mouth_w: rng.range(0.10, 0.21),
            lip_upper: rng.range(0.012, 0.04),
            lip_lower: rng.range(0.015, 0.05),
            lip,
            resting_smile: rng.sym(0.5),
            ear_size: rng.range(0.75, 1.3),
            ear_y: rng.range(-0.05, 0.1),
            beard,
            beard_color,
            glasses,
            mole,
            mark,
        }
    }
}
