//! Checks the `initial_image` of `session_init_v2` before anything uses it: an allowed type,
//! strict base64, not empty, within the size limit, and bytes that really decode as the
//! announced image type. Each failure has its own reason so clients can tell what to fix.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use framecast_common::protocol::InitialImage;
use image::ImageFormat;

/// A checked image, decoded to RGB8 (the generator's conditioning image type).
pub type DecodedImage = crate::generate::RgbImage;

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// `mime` is not png, jpeg or webp.
    #[error("initial_image.mime `{0}` is not one of image/png, image/jpeg, image/webp")]
    Mime(String),
    /// `data` is not strict standard base64.
    #[error("initial_image.data is not valid base64: {0}")]
    Base64(String),
    /// `data` decodes to nothing.
    #[error("initial_image.data is empty")]
    Empty,
    /// Decoded bytes over the limit.
    #[error("initial_image is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Decoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The header announces more pixels than the limit (checked before decoding them).
    #[error("initial_image is {width}x{height}, over the {limit}-pixel limit")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    /// The bytes do not decode as the announced type.
    #[error("initial_image does not decode as {mime}: {reason}")]
    Undecodable {
        /// The announced type.
        mime: String,
        /// The decoder's message.
        reason: String,
    },
}

impl ImageError {
    /// The machine-readable `reason` of the error frame.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::Mime(_) => "field:initial_image.mime",
            ImageError::Base64(_) | ImageError::Empty => "field:initial_image.data",
            ImageError::TooLarge { .. } | ImageError::TooManyPixels { .. } => {
                "initial_image_too_large"
            }
            ImageError::Undecodable { .. } => "initial_image_undecodable",
        }
    }
}

/// Validates and decodes `image`; `max_bytes` bounds the file size, `max_pixels` the image's
/// width x height, read from its header before any pixel is decoded. CPU-heavy: call it
/// off the async runtime.
pub fn decode(
    image: &InitialImage,
    max_bytes: usize,
    max_pixels: u64,
) -> Result<DecodedImage, ImageError> {
    let format = match image.mime.as_str() {
        "image/png" => ImageFormat::Png,
        "image/jpeg" => ImageFormat::Jpeg,
        "image/webp" => ImageFormat::WebP,
        other => return Err(ImageError::Mime(other.to_string())),
    };
    // Reject before decoding what cannot fit: base64 carries 3 bytes per 4 characters.
    let estimated = image.data.len() / 4 * 3;
    if estimated > max_bytes + 3 {
        return Err(ImageError::TooLarge {
            size: estimated,
            limit: max_bytes,
        });
    }
    let bytes = STANDARD
        .decode(image.data.as_bytes())
        .map_err(|e| ImageError::Base64(e.to_string()))?;
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > max_bytes {
        return Err(ImageError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    let undecodable = |e: image::ImageError| ImageError::Undecodable {
        mime: image.mime.clone(),
        reason: e.to_string(),
    };
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    let (width, height) = reader().into_dimensions().map_err(undecodable)?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            limit: max_pixels,
        });
    }
    // The decoder is held to what the header announced: a lying header cannot make it
    // allocate more than the pixels that passed the check (RGBA16 at most).
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    let mut reader = reader();
    reader.limits(limits);
    let decoded = reader.decode().map_err(undecodable)?;
    let rgb = decoded.to_rgb8();
    Ok(DecodedImage {
        width: rgb.width(),
        height: rgb.height(),
        rgb: rgb.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn input(mime: &str, data: String) -> InitialImage {
        InitialImage {
            mime: mime.into(),
            name: Some("t.png".into()),
            data,
        }
    }

    #[test]
    fn a_real_png_decodes_to_rgb() {
        let img = decode(
            &input("image/png", STANDARD.encode(png(6, 4))),
            1 << 20,
            1 << 24,
        )
        .unwrap();
        assert_eq!((img.width, img.height, img.rgb.len()), (6, 4, 6 * 4 * 3));
        assert_eq!(&img.rgb[3..6], &[1, 0, 7], "pixel (1, 0)");
    }

    #[test]
    fn each_bad_input_has_its_own_error() {
        let good = STANDARD.encode(png(2, 2));
        assert!(matches!(
            decode(&input("image/gif", good.clone()), 1 << 20, 1 << 24),
            Err(ImageError::Mime(_))
        ));
        assert!(matches!(
            decode(&input("image/png", "not base64!".into()), 1 << 20, 1 << 24),
            Err(ImageError::Base64(_))
        ));
        assert!(
            matches!(
                decode(&input("image/png", format!("{good}=")), 1 << 20, 1 << 24),
                Err(ImageError::Base64(_))
            ),
            "strict padding"
        );
        assert_eq!(
            decode(&input("image/png", String::new()), 1 << 20, 1 << 24),
            Err(ImageError::Empty)
        );
        assert!(matches!(
            decode(&input("image/png", good.clone()), 10, 1 << 24),
            Err(ImageError::TooLarge { .. })
        ));
        let err = decode(&input("image/jpeg", good), 1 << 20, 1 << 24).unwrap_err();
        assert!(
            matches!(err, ImageError::Undecodable { .. }),
            "PNG bytes announced as JPEG"
        );
        assert_eq!(err.reason(), "initial_image_undecodable");
        let garbage = STANDARD.encode([1u8, 2, 3, 4, 5, 6]);
        assert!(matches!(
            decode(&input("image/webp", garbage), 1 << 20, 1 << 24),
            Err(ImageError::Undecodable { .. })
        ));
    }

    #[test]
    fn pixels_over_the_limit_are_refused_before_decoding() {
        let data = STANDARD.encode(png(100, 100));
        let err = decode(&input("image/png", data.clone()), 1 << 20, 5_000).unwrap_err();
        assert_eq!(
            err,
            ImageError::TooManyPixels {
                width: 100,
                height: 100,
                limit: 5_000
            }
        );
        assert_eq!(err.reason(), "initial_image_too_large");
        assert!(decode(&input("image/png", data), 1 << 20, 10_000).is_ok());
    }
}
