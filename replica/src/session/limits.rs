//! The checks on every number and list a client sends, against `streaming.limits`. Pure
//! functions, so each bound is unit-tested; the session turns a [`Refusal`] into an
//! `invalid_message` naming the field and goes on.

use framecast_common::protocol::SegmentPrompt;

use crate::config::ClientLimits;

/// Largest seed a client may send: 2^53 - 1, the largest integer a JavaScript client can
/// hold exactly, so a seed echoed back to a browser is the seed that was used.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// Why a client value was refused, as the error frame says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Names the field, the value and the allowed range.
    pub message: String,
    /// `field:<name>`, the frame's machine-readable reason.
    pub reason: String,
}

impl Refusal {
    fn field(field: &str, message: String) -> Self {
        Self {
            message: format!("{field} {message}"),
            reason: format!("field:{field}"),
        }
    }
}

/// Checks one `segment_prompt_source` (prompt, negative prompt, seed, steps, guidance).
pub fn check_prompt(p: &SegmentPrompt, limits: &ClientLimits) -> Result<(), Refusal> {
    if p.prompt.trim().is_empty() {
        return Err(Refusal::field("prompt", "must not be empty".into()));
    }
    check_text("prompt", &p.prompt, limits)?;
    if let Some(negative) = &p.negative_prompt {
        check_text("negative_prompt", negative, limits)?;
    }
    if let Some(seed) = p.seed
        && seed > MAX_SEED
    {
        return Err(Refusal::field(
            "seed",
            format!("{seed} is out of range (0..={MAX_SEED})"),
        ));
    }
    if let Some(steps) = p.num_inference_steps {
        let max = limits.max_inference_steps;
        if steps == 0 {
            return Err(Refusal::field(
                "num_inference_steps",
                "must be at least 1".into(),
            ));
        }
        if steps > max {
            return Err(Refusal::field(
                "num_inference_steps",
                format!("{steps} is out of range (1..={max})"),
            ));
        }
    }
    if let Some(scale) = p.guidance_scale {
        let max = limits.max_guidance_scale;
        if !scale.is_finite() || !(0.0..=max).contains(&scale) {
            return Err(Refusal::field(
                "guidance_scale",
                format!("{scale} is out of range (a finite number in 0..={max})"),
            ));
        }
    }
    Ok(())
}

/// Checks a seed-prompt list (`curated_prompts` or `seed_prompts`): its length and each
/// prompt's.
pub fn check_seed_prompts(
    field: &str,
    prompts: &[String],
    limits: &ClientLimits,
) -> Result<(), Refusal> {
    let max = limits.max_seed_prompts;
    if prompts.len() > max {
        return Err(Refusal::field(
            field,
            format!("holds {} prompts, more than {max}", prompts.len()),
        ));
    }
    for (i, prompt) in prompts.iter().enumerate() {
        check_text(&format!("{field}[{i}]"), prompt, limits)?;
    }
    Ok(())
}

fn check_text(field: &str, text: &str, limits: &ClientLimits) -> Result<(), Refusal> {
    let max = limits.max_prompt_chars;
    // Counting stops one past the limit: a megabyte of text is not walked to say "too long".
    let chars = text.chars().take(max + 1).count();
    if chars > max {
        return Err(Refusal::field(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(text: &str) -> SegmentPrompt {
        SegmentPrompt {
            prompt: text.into(),
            negative_prompt: None,
            source: None,
            seed: None,
            num_inference_steps: None,
            guidance_scale: None,
        }
    }

    fn refused(p: &SegmentPrompt) -> Refusal {
        check_prompt(p, &ClientLimits::default()).expect_err("refused")
    }

    #[test]
    fn ordinary_prompts_pass() {
        let mut p = prompt("a red ball");
        p.seed = Some(MAX_SEED);
        p.num_inference_steps = Some(100);
        p.guidance_scale = Some(5.0);
        assert_eq!(check_prompt(&p, &ClientLimits::default()), Ok(()));
    }

    #[test]
    fn steps_beyond_the_limit_name_the_field_and_range() {
        let mut p = prompt("x");
        p.num_inference_steps = Some(u32::MAX);
        let r = refused(&p);
        assert_eq!(r.reason, "field:num_inference_steps");
        assert!(r.message.contains("(1..=100)"), "{}", r.message);
        p.num_inference_steps = Some(0);
        assert_eq!(refused(&p).reason, "field:num_inference_steps");
    }

    #[test]
    fn guidance_must_be_finite_and_in_range() {
        for bad in [f32::NAN, f32::INFINITY, -1.0, 1e9] {
            let mut p = prompt("x");
            p.guidance_scale = Some(bad);
            assert_eq!(refused(&p).reason, "field:guidance_scale", "{bad}");
        }
    }

    #[test]
    fn seeds_beyond_javascript_integers_are_refused() {
        let mut p = prompt("x");
        p.seed = Some(MAX_SEED + 1);
        assert_eq!(refused(&p).reason, "field:seed");
    }

    #[test]
    fn long_and_empty_texts_are_refused() {
        assert_eq!(refused(&prompt("   ")).reason, "field:prompt");
        let long = "é".repeat(2001);
        assert_eq!(refused(&prompt(&long)).reason, "field:prompt");
        let mut p = prompt("x");
        p.negative_prompt = Some(long);
        assert_eq!(refused(&p).reason, "field:negative_prompt");
        // Characters, not bytes: 2000 two-byte characters are fine.
        assert_eq!(
            check_prompt(&prompt(&"é".repeat(2000)), &ClientLimits::default()),
            Ok(())
        );
    }

    #[test]
    fn seed_prompt_lists_are_bounded_in_length_and_per_prompt() {
        let limits = ClientLimits::default();
        let many = vec!["p".to_string(); 65];
        let r = check_seed_prompts("seed_prompts", &many, &limits).unwrap_err();
        assert_eq!(r.reason, "field:seed_prompts");
        let long = vec!["ok".to_string(), "x".repeat(2001)];
        let r = check_seed_prompts("curated_prompts", &long, &limits).unwrap_err();
        assert_eq!(r.reason, "field:curated_prompts[1]");
        assert!(check_seed_prompts("seed_prompts", &many[..64], &limits).is_ok());
    }
}
