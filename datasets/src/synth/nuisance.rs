//! Everything that changes from one photo of a person to the next: pose, light, camera colour,
//! expression, background, clothes and the degradation level. None of it carries identity, and it is
//! made strong on purpose (side light, colour casts, shifts, busy backgrounds) so that raw pixels are a
//! poor identity cue.

use super::identity::Rgb;
use super::rng::SynthRng;

#[derive(Debug, Clone, Copy)]
pub enum Clutter {
    /// Axis-aligned box.
    Rect {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
    },
    Disc {
        x: f32,
        y: f32,
        r: f32,
    },
    /// Infinite band at angle: |dot(p, n) - offset| < half_width.
    Band {
        nx: f32,
        ny: f32,
        offset: f32,
        half_width: f32,
    },
}

#[derive(Debug, Clone)]
pub struct Background {
    pub base: Rgb,
    /// Linear brightness ramp across the image.
    pub ramp: [f32; 2],
    pub items: Vec<(Clutter, Rgb, f32)>,
}

#[derive(Debug, Clone)]
pub struct Nuisance {
    pub shift: [f32; 2],
    pub scale: f32,
    pub roll: f32,
    /// Head turn: sin of the yaw-like angle.
    pub yaw: f32,
    /// Unit vector towards the light, z towards the camera.
    pub light_dir: [f32; 3],
    pub ambient: f32,
    pub diffuse: f32,
    pub exposure: f32,
    /// Uneven illumination of the whole frame: brightness 1 + g·(x, y), clamped below.
    pub gradient: [f32; 2],
    /// Per-channel camera gains (white balance / colour cast).
    pub cast: Rgb,
    pub smile: f32,
    pub mouth_open: f32,
    pub eye_open: f32,
    pub brow_raise: f32,
    pub gaze: [f32; 2],
    /// Low-frequency elastic warp of the face: amplitude and phases.
    pub warp: [f32; 5],
    pub clothes: Rgb,
    pub background: Background,
    /// Degradation level in [0, 1]; see the module documentation for what it does.
    pub degradation: f32,
}

fn random_color(rng: &mut SynthRng) -> Rgb {
    [rng.unit(), rng.unit(), rng.unit()]
}

impl Background {
    pub fn sample(rng: &mut SynthRng) -> Background {
        let base = random_color(rng);
        let ramp = [rng.sym(0.35), rng.sym(0.35)];
        let n = rng.below(9);
        let items = (0..n)
            .map(|_| {
                let shape = match rng.below(3) {
                    0 => {
                        let (x, y) = (rng.sym(1.1), rng.sym(1.1));
                        let (w, h) = (rng.range(0.1, 0.9), rng.range(0.1, 0.9));
                        Clutter::Rect { x0: x - w, y0: y - h, x1: x + w, y1: y + h }
                    }
                    1 => Clutter::Disc { x: rng.sym(1.1), y: rng.sym(1.1), r: rng.range(0.08, 0.6) },
                    _ => {
                        let a = rng.range(0.0, std::f32::consts::PI);
                        Clutter::Band {
                            nx: a.cos(),
                            ny: a.sin(),
                            offset: rng.sym(1.0),
                            half_width: rng.range(0.03, 0.25),
                        }
                    }
                };
                (shape, random_color(rng), rng.range(0.5, 1.0))
            })
            .collect();
        Background { base, ramp, items }
    }
}

impl Nuisance {
    pub fn sample(rng: &mut SynthRng) -> Nuisance {
        let azimuth = rng.range(0.0, std::f32::consts::TAU);
        let elevation = rng.range(0.25, 1.15);
        let (se, ce) = elevation.sin_cos();
        let ambient = rng.range(0.1, 0.45);
        let temperature = rng.sym(1.0);
        let tint = rng.sym(1.0);
        let cast = [
            1.0 + 0.15 * temperature - 0.04 * tint,
            1.0 + 0.06 * tint,
            1.0 - 0.15 * temperature - 0.04 * tint,
        ];
        Nuisance {
            // Pose jitter as a face detector's alignment leaves it: at twice these ranges the 32 px demo
            // net stalled near 94% while raw pixels gained little from the smaller ones (0.61 -> 0.63).
            shift: [rng.sym(0.12), rng.sym(0.09)],
            scale: rng.range(1.07, 1.27),
            roll: rng.sym(0.15),
            yaw: rng.sym(0.3),
            light_dir: [se * azimuth.cos(), se * azimuth.sin(), ce],
            // The brightest lit surface always reaches about 1.1: the light's direction and the
            // ambient share vary a lot (which moves pixels), its peak does not (which would hide
            // skin and hair tone).
            ambient,
            diffuse: 1.1 - ambient,
            exposure: rng.range(0.85, 1.15),
            gradient: [rng.sym(0.45), rng.sym(0.45)],
            cast,
            smile: rng.range(-0.4, 0.8),
            mouth_open: if rng.chance(0.3) { rng.range(0.2, 1.0) } else { 0.0 },
            eye_open: if rng.chance(0.05) { rng.range(0.1, 0.4) } else { rng.range(0.75, 1.1) },
            brow_raise: rng.sym(0.025),
            gaze: [rng.sym(0.35), rng.sym(0.2)],
            warp: [
                rng.range(0.0, 0.012),
                rng.range(0.0, 6.3),
                rng.range(0.0, 6.3),
                rng.range(2.0, 4.0),
                rng.range(2.0, 4.0),
            ],
            clothes: random_color(rng),
            background: Background::sample(rng),
            degradation: rng.unit() * rng.unit(),
        }
    }
}
