//! QR codes of `otpauth://` URIs: for a terminal, as PNG bytes, and as SVG.

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

use crate::error::CoreError;

fn code(data: &str) -> Result<QrCode, CoreError> {
    QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)
        .map_err(|e| CoreError::Internal(format!("QR encoding failed: {e}")))
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
}
