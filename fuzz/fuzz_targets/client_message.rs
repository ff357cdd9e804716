//! `parse_client_message` on arbitrary UTF-8: it never panics, every rejection has a
//! reason and names the field it blames, and what it accepts survives being sent back.

#![no_main]

use framecast_common::protocol::{ProtocolError, parse_client_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match parse_client_message(text) {
        Ok(msg) => {
            // Re-sending an accepted message is accepted as the same type. (Not `==`: a
            // float may come back one bit off, and an f32 beyond its range as `null`.)
            let again = serde_json::to_string(&msg).expect("client messages serialize");
            let back = parse_client_message(&again)
                .unwrap_or_else(|e| panic!("{again:?} was sent back and refused: {e}"));
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&msg),
                "{again}"
            );
        }
        Err(err) => {
            assert!(!err.reason().is_empty());
            assert!(!err.to_string().is_empty());
            if let ProtocolError::InvalidField { field, problem, .. } = &err {
                assert!(!field.is_empty() && field != ".", "{err}");
                assert!(!problem.is_empty(), "{err}");
            }
        }
    }
});
