//! Draws one photo of an identity under one nuisance draw, as linear RGB floats in HWC order.
//!
//! Each output pixel is mapped back into the canonical face frame (inverse shift, roll and scale, then
//! a yaw-like parallax that moves features in front of the head's depth further than the outline, then
//! a small elastic warp), and the face is evaluated there as layered soft-edged shapes. Shading uses
//! the normal of an ellipsoidal head perturbed by smooth bumps (nose ridge, nose tip, eye sockets), so
//! the side the light comes from changes the picture a lot while the geometry stays the person's.

use super::identity::{Beard, HairStyle, Identity, Rgb};
use super::nuisance::{Background, Clutter, Nuisance};

/// Anti-aliased coverage of a shape from its signed distance (negative inside) and the pixel size.
#[inline]
fn cover(sd: f32, aa: f32) -> f32 {
    (0.5 - sd / aa).clamp(0.0, 1.0)
}

#[inline]
fn blend(c: &mut Rgb, col: Rgb, a: f32) {
    if a > 0.0 {
        for k in 0..3 {
            c[k] += (col[k] - c[k]) * a;
        }
    }
}

#[inline]
fn scaled(col: Rgb, s: f32) -> Rgb {
    [col[0] * s, col[1] * s, col[2] * s]
}

/// Approximate signed distance to an axis-aligned ellipse centred at the origin.
#[inline]
fn ellipse_sd(dx: f32, dy: f32, rx: f32, ry: f32) -> f32 {
    let r = ((dx / rx) * (dx / rx) + (dy / ry) * (dy / ry)).sqrt();
    (r - 1.0) * rx.min(ry)
}

/// Gradient of a Gaussian bump of height `h` (a surface detail added to the head's depth).
#[inline]
fn bump_grad(du: f32, dv: f32, su: f32, sv: f32, h: f32) -> (f32, f32) {
    let e = du * du / (2.0 * su * su) + dv * dv / (2.0 * sv * sv);
    if e > 9.0 {
        return (0.0, 0.0);
    }
    let val = h * (-e).exp();
    (-du / (su * su) * val, -dv / (sv * sv) * val)
}

fn background_color(bg: &Background, x: f32, y: f32) -> Rgb {
    let g = 1.0 + bg.ramp[0] * x + bg.ramp[1] * y;
    let mut c = scaled(bg.base, g);
    for &(shape, col, alpha) in &bg.items {
        let inside = match shape {
            Clutter::Rect { x0, y0, x1, y1 } => x >= x0 && x <= x1 && y >= y0 && y <= y1,
            Clutter::Disc { x: cx, y: cy, r } => (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r,
            Clutter::Band { nx, ny, offset, half_width } => (x * nx + y * ny - offset).abs() <= half_width,
        };
        if inside {
            blend(&mut c, scaled(col, g), alpha);
        }
    }
    c
}

/// Per-image constants derived once from the identity and nuisance.
struct Scene<'a> {
    id: &'a Identity,
    nz: &'a Nuisance,
    /// Canonical units per output pixel, for anti-aliasing.
    aa: f32,
    smile: f32,
}

impl Scene<'_> {
    fn shade(&self, n: [f32; 3]) -> f32 {
        let l = self.nz.light_dir;
        self.nz.ambient + self.nz.diffuse * (n[0] * l[0] + n[1] * l[1] + n[2] * l[2]).max(0.0)
    }

    /// Head depth used for the yaw parallax (a paraboloid: smooth, so the inverse map converges).
    fn depth(&self, u: f32, v: f32) -> f32 {
        let id = self.id;
        let r2 = (u / id.head_w).powi(2) + ((v - id.head_cy) / id.head_h).powi(2);
        0.75 * id.head_w * (1.0 - r2).max(0.0)
    }

    /// Surface normal of the head with its bumps, as the shading sees it.
    fn normal(&self, u: f32, v: f32) -> [f32; 3] {
        let id = self.id;
        let (nu, nv) = (u / id.head_w, (v - id.head_cy) / id.head_h);
        let nz = (1.0 - nu * nu - nv * nv).max(0.04).sqrt();
        let (mut gx, mut gy) = (nu / nz, nv / nz);
        // Nose ridge rising from the bridge to the tip, then the tip itself.
        let ny = id.nose_y;
        let (p, dp) = if v <= id.nose_top {
            (0.0, 0.0)
        } else if v <= ny {
            ((v - id.nose_top) / (ny - id.nose_top), 1.0 / (ny - id.nose_top))
        } else {
            let e = ((v - ny) / 0.035).powi(2);
            ((-e).exp(), -2.0 * (v - ny) / (0.035 * 0.035) * (-e).exp())
        };
        let su = id.nose_w * 0.7;
        let g = (-(u * u) / (2.0 * su * su)).exp();
        gx -= -u / (su * su) * id.nose_height * g * p;
        gy -= id.nose_height * g * dp;
        let (tx, ty) = bump_grad(u, v - ny, id.nose_w, 0.04, id.nose_height * 0.4);
        gx -= tx;
        gy -= ty;
        let side = if u < 0.0 { -1.0 } else { 1.0 };
        let (ex, ey) = bump_grad(u - side * id.eye_dx, v - id.eye_y + 0.02, 0.09, 0.06, -0.03);
        gx -= ex;
        gy -= ey;
        let inv = 1.0 / (gx * gx + gy * gy + 1.0).sqrt();
        [gx * inv, gy * inv, inv]
    }

    fn hairline(&self, u: f32) -> f32 {
        let id = self.id;
        let side = (u.abs() / id.head_w).min(1.2);
        let temple = 0.45 * side.powi(4);
        match id.hair_style {
            HairStyle::Fringe => {
                id.hairline
                    + 0.2
                    + 0.02 * (u * (20.0 + 30.0 * id.hair_length) + id.hair_tilt * 6.0).sin()
                    + 0.2 * temple
            }
            HairStyle::SidePart => id.hairline + id.hair_tilt * 0.25 * (u + id.head_w) + temple,
            _ => id.hairline + temple,
        }
    }

    /// Strand texture, so hair reads as hair and not as a flat cap.
    fn hair_color(&self, u: f32, v: f32, shade: f32) -> Rgb {
        let t = 1.0 + 0.1 * (u * 55.0 + 4.0 * (v * 9.0).sin()).sin();
        scaled(self.id.hair, shade * t)
    }

    fn pixel(&self, u: f32, v: f32, c: &mut Rgb) {
        let id = self.id;
        let nz = self.nz;
        let aa = self.aa;
        let (w, h, cy) = (id.head_w, id.head_h, id.head_cy);
        let flat_shade = self.shade([0.0, 0.3, 0.95]);

        // Clothes and neck.
        let shoulder = cy + h * 0.8 + 0.12 * (u / 0.9).powi(2);
        let cloth = cover(shoulder - v, aa);
        blend(c, scaled(nz.clothes, flat_shade), cloth);
        let neck_sd = (u.abs() - w * 0.55).max(cy + h * 0.3 - v).max(v - shoulder - 0.08);
        blend(c, scaled(id.skin, flat_shade * 0.72), cover(neck_sd, aa));

        let r_head = ((u / w).powi(2) + ((v - cy) / h).powi(2)).sqrt();
        if r_head > 2.2 {
            return;
        }
        let n = self.normal(u, v);
        let shade = self.shade(n);

        // Hair behind the head.
        let back_sd = match id.hair_style {
            HairStyle::Long => {
                let width = w + id.hair_volume + 0.05;
                let bottom = cy + 0.15 + id.hair_length * 0.75;
                if v < cy {
                    ellipse_sd(u, v - cy, width, h + id.hair_volume)
                } else {
                    (u.abs() - width).max(v - bottom)
                }
            }
            HairStyle::Curly => {
                let (du, dv) = (u, v - cy + 0.08);
                let ang = dv.atan2(du);
                let wob = 1.0 + 0.06 * (ang * 11.0 + id.hair_tilt * 5.0).sin();
                ellipse_sd(du, dv, (w + 0.12 + id.hair_volume) * wob, (h * 0.85 + id.hair_volume) * wob)
            }
            _ => f32::INFINITY,
        };
        if back_sd < aa {
            blend(c, self.hair_color(u, v, flat_shade * 0.85), cover(back_sd, aa));
        }

        // Ears.
        let ear_v = id.eye_y + 0.08 + id.ear_y * 0.5;
        let ear_sd = ellipse_sd(u.abs() - w * 0.97, v - ear_v, 0.055 * id.ear_size, 0.1 * id.ear_size);
        if ear_sd < aa {
            let ear_shade = self.shade([u.signum() * 0.85, 0.0, 0.5]);
            blend(c, scaled(id.skin, ear_shade * 0.9), cover(ear_sd, aa));
        }

        // Head, with a jaw that narrows towards the chin.
        let wv = if v > cy { w * (1.0 - id.jaw_taper * ((v - cy) / h).powi(2)) } else { w };
        let head_sd = ellipse_sd(u, v - cy, wv, h);
        if head_sd < aa {
            let mut skin = id.skin;
            let side = u.signum();
            let cheek = (-((u - side * (id.eye_dx + 0.06)).powi(2) + (v - id.nose_y).powi(2))
                / (2.0 * 0.07 * 0.07))
                .exp();
            blend(&mut skin, [0.85, 0.35, 0.35], id.blush * cheek);
            if let Some(m) = id.mark {
                blend(&mut skin, m.color, 0.85 * cover(ellipse_sd(u - m.x, v - m.y, m.rx, m.ry), aa));
            }
            if let Some(m) = id.mole {
                let a = cover(((u - m.x).powi(2) + (v - m.y).powi(2)).sqrt() - m.radius, aa);
                blend(&mut skin, scaled(id.skin, 0.35), a);
            }
            blend(c, scaled(skin, shade), cover(head_sd, aa));
            self.face_features(u, v, shade, c);
        }

        // Hair on top of the head.
        if id.hair_style != HairStyle::Bald {
            let cap_sd =
                ellipse_sd(u, v - cy, w + id.hair_volume * 0.6, h + id.hair_volume).max(v - self.hairline(u));
            if cap_sd < aa {
                blend(c, self.hair_color(u, v, shade.max(flat_shade * 0.6)), cover(cap_sd, aa));
            }
        }

        if let Some(g) = id.glasses {
            let ul = u.abs();
            let (du, dv) = (ul - id.eye_dx, v - id.eye_y);
            let p = g.squareness;
            let rr = ((du / g.radius).abs().powf(p) + (dv / (g.radius * 0.8)).abs().powf(p)).powf(1.0 / p);
            blend(c, [0.75, 0.82, 0.9], 0.15 * cover((rr - 1.0) * g.radius, aa));
            let ring = ((rr - 1.0) * g.radius).abs() - g.thickness * 0.5;
            let bar_v = id.eye_y - g.radius * 0.25;
            let bridge = (ul - (id.eye_dx - g.radius * 0.9)).max((v - bar_v).abs() - g.thickness * 0.5);
            let temple =
                (id.eye_dx + g.radius * 0.95 - ul).max(ul - w).max((v - bar_v).abs() - g.thickness * 0.4);
            let sd = ring.min(bridge).min(temple);
            blend(c, scaled(g.color, flat_shade), cover(sd, aa));
        }
    }

    /// Beard, mouth, nostrils, eyes and brows, drawn over the skin.
    fn face_features(&self, u: f32, v: f32, shade: f32, c: &mut Rgb) {
        let id = self.id;
        let nz = self.nz;
        let aa = self.aa;
        let ul = u.abs();
        let side = if u < 0.0 { -1.0 } else { 1.0 };

        // Beard.
        let under_nose = v - (id.nose_y + 0.045);
        let moustache =
            (ul - (id.mouth_w + 0.03)).max(-under_nose).max(v - (id.mouth_y - id.lip_upper * 0.5));
        let beard_sd = match id.beard {
            Beard::None => f32::INFINITY,
            Beard::Moustache => moustache,
            Beard::Goatee => moustache.min(ellipse_sd(u, v - (id.mouth_y + 0.12), id.mouth_w * 0.85, 0.12)),
            Beard::Full => {
                let head = ellipse_sd(u, v - id.head_cy, id.head_w * 0.98, id.head_h * 0.98);
                head.max(id.nose_y + 0.02 + 0.25 * (ul / id.head_w).powi(2) - v).min(moustache)
            }
        };
        if beard_sd < aa {
            let t = 1.0 + 0.12 * (u * 70.0).sin() * (v * 60.0).sin();
            blend(c, scaled(id.beard_color, shade * t), 0.92 * cover(beard_sd, aa));
        }

        // Mouth: lips around a centre line that curves with the smile; a dark gap when open.
        let smile = self.smile;
        let mw = id.mouth_w * (1.0 + 0.1 * smile);
        let s = u / mw;
        if s.abs() < 1.2 && (v - id.mouth_y).abs() < 0.15 {
            let env = (1.0 - s * s).max(0.0).sqrt();
            let vc = id.mouth_y - 0.045 * smile * s * s + 0.02 * smile;
            let half_gap = nz.mouth_open * 0.025 * env;
            let across = (s.abs() - 1.0) * mw;
            let upper =
                across.max(v - (vc - half_gap)).max(vc - half_gap - id.lip_upper * (0.35 + 0.65 * env) - v);
            let lower =
                across.max(vc + half_gap - v).max(v - (vc + half_gap + id.lip_lower * (0.35 + 0.65 * env)));
            let lips = upper.min(lower);
            blend(c, scaled(id.lip, shade), cover(lips, aa));
            let gap = across.max((v - vc).abs() - half_gap.max(0.004));
            blend(c, scaled([0.2, 0.06, 0.06], shade), cover(gap, aa));
        }

        // Nostrils.
        let nostril =
            ellipse_sd(ul - id.nose_w * 0.55, v - id.nose_y - 0.012, id.nose_w * 0.25 + 0.006, 0.012);
        blend(c, scaled(id.skin, 0.3 * shade), 0.85 * cover(nostril, aa));

        // Eyes: white, iris, pupil, and a dark lid line; tilt mirrors between the two sides.
        let (du, dv0) = (ul - id.eye_dx, v - id.eye_y);
        if du.abs() < 0.2 && dv0.abs() < 0.15 {
            let dv = dv0 + id.eye_tilt * du;
            let open = (id.eye_h * nz.eye_open).max(0.004);
            let eye_sd = ellipse_sd(du, dv, id.eye_w, open);
            let mut col = [0.92, 0.9, 0.87];
            let ri = id.eye_h * 0.9;
            let (gx, gy) = (nz.gaze[0] * id.eye_w * 0.45 * side, nz.gaze[1] * id.eye_h * 0.3);
            let di = ((du - gx).powi(2) + (dv - gy).powi(2)).sqrt();
            blend(&mut col, id.iris, cover(di - ri, aa));
            blend(&mut col, [0.03, 0.03, 0.03], cover(di - ri * 0.42, aa));
            blend(c, scaled(col, 0.4 + 0.6 * shade), cover(eye_sd, aa));
            let lid = eye_sd.abs() - if dv < 0.0 { 0.008 } else { 0.003 };
            blend(c, scaled([0.08, 0.06, 0.05], shade), cover(lid, aa));
        }

        // Brows: a tapered arc above each eye.
        let t = (ul - id.eye_dx + 0.01) / id.brow_len;
        if t.abs() < 1.3 {
            let vc = id.eye_y
                - id.brow_gap
                - nz.brow_raise
                - id.brow_arch * (1.0 - t * t)
                - id.brow_slope * t * id.brow_len;
            let th = id.brow_thick * (1.0 - 0.35 * t);
            let sd = ((v - vc).abs() - th * 0.5).max((t.abs() - 1.0) * id.brow_len);
            blend(c, scaled(id.brow, shade), cover(sd, aa));
        }
    }
}

/// Renders `size` x `size` linear RGB in HWC order (values may exceed [0, 1] before the camera clips).
pub fn render(id: &Identity, nz: &Nuisance, size: usize) -> Vec<f32> {
    let px = 2.0 / size as f32;
    let scene = Scene { id, nz, aa: px / nz.scale, smile: (id.resting_smile + nz.smile).clamp(-1.0, 1.5) };
    let (sr, cr) = nz.roll.sin_cos();
    let syaw = nz.yaw;
    let cyaw = (1.0 - syaw * syaw).sqrt();
    let [amp, p1, p2, f1, f2] = nz.warp;
    let mut out = vec![0.0f32; size * size * 3];
    for py in 0..size {
        let y = (py as f32 + 0.5) * px - 1.0;
        for pxi in 0..size {
            let x = (pxi as f32 + 0.5) * px - 1.0;
            let mut c = background_color(&nz.background, x, y);
            let (dx, dy) = (x - nz.shift[0], y - nz.shift[1]);
            let xf = (cr * dx + sr * dy) / nz.scale;
            let v0 = (-sr * dx + cr * dy) / nz.scale;
            let mut u = xf / cyaw;
            for _ in 0..4 {
                u = (xf - syaw * scene.depth(u, v0)) / cyaw;
            }
            let (u, v) = (u + amp * (f1 * v0 + p1).sin(), v0 + amp * (f2 * u + p2).sin());
            scene.pixel(u, v, &mut c);
            let gain = nz.exposure * (1.0 + nz.gradient[0] * x + nz.gradient[1] * y).max(0.25);
            let o = (py * size + pxi) * 3;
            for k in 0..3 {
                out[o + k] = c[k] * gain * nz.cast[k];
            }
        }
    }
    out
}
