//! QR codes of `otpauth://` URIs: for a terminal, as PNG bytes, and as SVG.

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

use crate::error::CoreError;

fn code(data: &str) -> Result<QrCode, CoreError> {
    QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)
        .map_err(|e| CoreError::Internal(format!("QR encoding failed: {e}")))
}

/// Modules of light border around [`terminal_compact`]'s code: phone scanners read a
/// code on a terminal with two (the standard's four make it 20 % larger).
const COMPACT_BORDER: usize = 2;

/// Like [`terminal`], as small as a phone still reads from a terminal: error
/// correction L and a border of two modules. An enrollment at the login through a
/// RADIUS server carries it in one Access-Challenge, whose 4096 bytes the standard
/// rendering of a long `otpauth://` URI (about 5 kB with its text) does not fit.
pub fn terminal_compact(data: &str) -> Result<String, CoreError> {
    let qr = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::L)
        .map_err(|e| CoreError::Internal(format!("QR encoding failed: {e}")))?;
    let width = qr.width();
    let colors = qr.to_colors();
    let side = width + 2 * COMPACT_BORDER;
    // Light modules are drawn (a terminal's background is usually dark), dark ones
    // left blank, as `terminal` does.
    let light = |x: usize, y: usize| -> bool {
        let (Some(mx), Some(my)) = (x.checked_sub(COMPACT_BORDER), y.checked_sub(COMPACT_BORDER))
        else {
            return true;
        };
        if mx >= width || my >= width {
            return true;
        }
        colors.get(my * width + mx) != Some(&qrcode::Color::Dark)
    };
    let mut out = String::with_capacity(side * side * 2);
    for y in (0..side).step_by(2) {
        for x in 0..side {
            let top = light(x, y);
            let bottom = y + 1 >= side || light(x, y + 1);
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    Ok(out)
}

/// Half-height Unicode blocks, dark on light, with a quiet zone.
pub fn terminal(data: &str) -> Result<String, CoreError> {
    Ok(code(data)?
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// An SVG image, for the portal.
pub fn svg(data: &str) -> Result<String, CoreError> {
    Ok(code(data)?
        .render::<svg::Color<'_>>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build())
}

/// A greyscale PNG, `scale` pixels per module, with a 4-module quiet zone.
pub fn png(data: &str, scale: u32) -> Result<Vec<u8>, CoreError> {
    let qr = code(data)?;
    let modules =
        u32::try_from(qr.width()).map_err(|_| CoreError::Internal("QR too wide".into()))?;
    let colors = qr.to_colors();
    let quiet = 4;
    let side = (modules + 2 * quiet) * scale;
    let mut pixels = vec![255u8; (side * side) as usize];
    for (i, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let i = u32::try_from(i).map_err(|_| CoreError::Internal("QR too large".into()))?;
        let (mx, my) = (i % modules, i / modules);
        for dy in 0..scale {
            let y = (my + quiet) * scale + dy;
            let start = (y * side + (mx + quiet) * scale) as usize;
            if let Some(row) = pixels.get_mut(start..start + scale as usize) {
                row.fill(0);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| CoreError::Internal(format!("PNG: {e}")))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| CoreError::Internal(format!("PNG: {e}")))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_form() {
        let uri = "otpauth://totp/Example:alice?secret=JBSWY3DPEHPK3PXP&issuer=Example";
        assert!(terminal(uri).unwrap().contains('█'));
        assert!(svg(uri).unwrap().starts_with("<?xml"));
        let png = png(uri, 4).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn the_compact_form_keeps_every_module_and_fits_a_radius_packet() {
        // What an enrollment makes: a 160-bit secret, the issuer, a user name.
        let uri = "otpauth://totp/Example%20University:alice.smith\
                   ?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Example%20University\
                   &algorithm=SHA1&digits=6&period=30";
        let compact = terminal_compact(uri).unwrap();
        let qr = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::L).unwrap();
        let side = qr.width() + 2 * COMPACT_BORDER;
        let lines: Vec<&str> = compact.lines().collect();
        assert_eq!(lines.len(), side.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == side));
        // Each module read back from the half blocks is the code's.
        let colors = qr.to_colors();
        for (i, color) in colors.iter().enumerate() {
            let (x, y) = (
                i % qr.width() + COMPACT_BORDER,
                i / qr.width() + COMPACT_BORDER,
            );
            let c = lines[y / 2].chars().nth(x).unwrap();
            let light = if y % 2 == 0 {
                matches!(c, '█' | '▀')
            } else {
                matches!(c, '█' | '▄')
            };
            assert_eq!(light, *color != qrcode::Color::Dark, "module {x},{y}");
        }
        assert!(compact.len() < terminal(uri).unwrap().len());
        // With the text around it, it fits one 4096-byte Access-Challenge.
        assert!(compact.len() < 3_400, "{} bytes", compact.len());
    }
}
