//! What a task's item can hold of a client's JSON: Baton accepts only what DynamoDB will store,
//! so a submission or a result is refused with a reason at the edge, never by the store later.

use serde_json::Value;

/// The deepest a payload may nest arrays and objects. DynamoDB stores 32 levels of nesting and
/// counts the item's own map as the first (measured against the emulator: 31 nested lists in an
/// attribute are stored, 32 are refused).
pub const MAX_NESTING: usize = 31;
/// The longest object key, in bytes: a key is a DynamoDB attribute name, less than 64 KB.
const MAX_KEY_BYTES: usize = 65_535;
/// The largest magnitude DynamoDB stores (9.99…E+125); a larger number overflows.
const MAX_MAGNITUDE: f64 = 1e126;
/// The smallest non-zero magnitude DynamoDB stores; a smaller one underflows.
const MIN_MAGNITUDE: f64 = 1e-130;

/// Checks that `value` can be stored in a task's item within `cap` bytes, counted both as JSON
/// and as DynamoDB sizes it (numbers, lists and maps cost more there than their JSON text), and
/// that its structure fits DynamoDB ([`check_shape`]). Names the first thing out of bounds.
pub fn check_payload(value: &Value, cap: usize) -> Result<(), String> {
    check_shape(value)?;
    let json = serde_json::to_vec(value).map_or(0, |json| json.len());
    let bytes = json.max(stored_bytes(value));
    if bytes > cap {
        return Err(format!("must be at most {cap} bytes, is {bytes}"));
    }
    Ok(())
}

/// Checks what DynamoDB requires of a value's structure, whatever its size: nesting at most
/// [`MAX_NESTING`], object keys of 1 byte to 64 KB, numbers within DynamoDB's range.
pub fn check_shape(value: &Value) -> Result<(), String> {
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Array(items) => {
                nest(depth)?;
                stack.extend(items.iter().map(|item| (item, depth + 1)));
            }
            Value::Object(fields) => {
                nest(depth)?;
                for (key, item) in fields {
                    if key.is_empty() || key.len() > MAX_KEY_BYTES {
                        return Err(format!(
                            "object keys must be 1 to {MAX_KEY_BYTES} bytes long"
                        ));
                    }
                    stack.push((item, depth + 1));
                }
            }
            Value::Number(number) => {
                let magnitude = number.as_f64().map_or(0.0, f64::abs);
                if magnitude >= MAX_MAGNITUDE || (magnitude > 0.0 && magnitude < MIN_MAGNITUDE) {
                    return Err(format!(
                        "numbers must be 0 or of a magnitude from {MIN_MAGNITUDE:e} to below \
                         {MAX_MAGNITUDE:e}, found {number}"
                    ));
                }
            }
            Value::Null | Value::Bool(_) | Value::String(_) => {}
        }
    }
    Ok(())
}

fn nest(depth: usize) -> Result<(), String> {
    match depth < MAX_NESTING {
        true => Ok(()),
        false => Err(format!(
            "must nest at most {MAX_NESTING} levels of arrays and objects"
        )),
    }
}

/// The size DynamoDB counts for `value` stored as an attribute value, by its published rules:
/// a string its UTF-8 bytes, a number one byte per two significant digits plus one, a boolean
/// or null one byte, a list or map 3 bytes plus one per element and each map key's bytes.
pub fn stored_bytes(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 1,
        Value::String(text) => text.len(),
        Value::Number(number) => {
            let digits = number
                .to_string()
                .bytes()
                .filter(u8::is_ascii_digit)
                .count();
            digits.div_ceil(2) + 1
        }
        Value::Array(items) => {
            3 + items
                .iter()
                .map(|item| 1 + stored_bytes(item))
                .sum::<usize>()
        }
        Value::Object(fields) => {
            3 + fields
                .iter()
                .map(|(key, item)| 1 + key.len() + stored_bytes(item))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!("x"), |inner, _| json!([inner]))
    }

    #[test]
    fn nesting_stops_at_what_dynamodb_stores() {
        assert_eq!(check_payload(&nested(MAX_NESTING), 1024), Ok(()));
        let err = check_payload(&nested(MAX_NESTING + 1), 1024).unwrap_err();
        assert!(err.contains("nest at most 31"), "{err}");
        let objects = (0..MAX_NESTING + 1).fold(json!(1), |inner, _| json!({"a": inner}));
        assert!(check_payload(&objects, 1024).is_err());
    }

    #[test]
    fn empty_keys_and_numbers_out_of_range_are_refused() {
        assert!(check_payload(&json!({"": 1}), 1024).is_err());
        assert!(check_payload(&json!({"a": [{"": 1}]}), 1024).is_err());
        assert!(check_payload(&json!([1e300]), 1024).is_err());
        assert!(check_payload(&json!([1e-200]), 1024).is_err());
        assert!(check_payload(&json!([0.0, -1.5e125, 1e-129, u64::MAX, i64::MIN]), 1024).is_ok());
    }

    #[test]
    fn the_cap_counts_the_larger_of_json_and_stored_sizes() {
        // A list of small numbers: 2 JSON bytes an element, 3 stored.
        let numbers = Value::Array(vec![json!(7); 1000]);
        assert_eq!(serde_json::to_vec(&numbers).unwrap().len(), 2001);
        assert_eq!(stored_bytes(&numbers), 3 + 1000 * 3);
        assert!(check_payload(&numbers, 2500).is_err());
        assert!(check_payload(&numbers, 3003).is_ok());
        // Escaped text is larger as JSON.
        let quoted = json!("\"".repeat(100));
        assert_eq!(stored_bytes(&quoted), 100);
        assert!(check_payload(&quoted, 150).is_err());
    }

    #[test]
    fn stored_sizes_follow_dynamodb_rules() {
        assert_eq!(stored_bytes(&json!(null)), 1);
        assert_eq!(stored_bytes(&json!("héllo")), 6);
        assert_eq!(stored_bytes(&json!(12345)), 4);
        assert_eq!(
            stored_bytes(&json!({"ab": [true]})),
            3 + 1 + 2 + (3 + 1 + 1)
        );
    }
}
