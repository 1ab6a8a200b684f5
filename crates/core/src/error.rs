//! [`ConfigError`]: the one error every builder in the workspace returns when
//! a setting is out of range, naming the setting, the rejected value and what
//! would have been accepted.

use std::borrow::Cow;
use std::fmt;

/// A configuration value was rejected by a builder.
///
/// The message names the setting, the value that was given and the range
/// that is accepted, so that the error alone is enough to fix the call.
///
/// # Examples
///
/// ```
/// use async_patterns_core::ConfigError;
///
/// let err = ConfigError::at_least("max_items", 0_usize, 1).unwrap_err();
/// assert_eq!(err.field(), "max_items");
/// assert_eq!(err.value(), "0");
/// assert_eq!(err.to_string(), "invalid `max_items`: got 0, expected at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    value: String,
    expected: Cow<'static, str>,
}

impl ConfigError {
    /// Creates an error for `field`, which was given `value` but must satisfy
    /// `expected` (written to follow "expected", e.g. `"at least 1"`).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::ConfigError;
    ///
    /// let err = ConfigError::new("multiplier", 0.5, "a finite number >= 1.0");
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid `multiplier`: got 0.5, expected a finite number >= 1.0"
    /// );
    /// ```
    pub fn new(
        field: &'static str,
        value: impl fmt::Display,
        expected: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConfigError {
            field,
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// Returns `Ok(value)` if `value >= min`, or an error naming `field`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `field`, `value` and "at least `min`" when
    /// `value < min` (or is not comparable to it, as NaN).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::ConfigError;
    ///
    /// assert_eq!(ConfigError::at_least("capacity", 8_usize, 1), Ok(8));
    /// let err = ConfigError::at_least("capacity", 0_usize, 1).unwrap_err();
    /// assert_eq!(err.expected(), "at least 1");
    /// ```
    pub fn at_least<T>(field: &'static str, value: T, min: T) -> Result<T, ConfigError>
    where
        T: PartialOrd + fmt::Debug,
    {
        if value >= min {
            Ok(value)
        } else {
            Err(ConfigError::new(
                field,
                DebugDisplay(&value),
                format!("at least {:?}", min),
            ))
        }
    }

    /// Returns `Ok(value)` if `min <= value <= max`, or an error naming `field`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `field`, `value` and "between `min` and
    /// `max`" when `value` is outside the range (or NaN).
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::ConfigError;
    ///
    /// assert_eq!(ConfigError::in_range("ratio", 0.5, 0.0, 1.0), Ok(0.5));
    /// let err = ConfigError::in_range("ratio", 1.5, 0.0, 1.0).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid `ratio`: got 1.5, expected between 0.0 and 1.0");
    /// ```
    pub fn in_range<T>(field: &'static str, value: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: PartialOrd + fmt::Debug,
    {
        // Written so that NaN, which compares false with everything, is rejected.
        if value >= min && value <= max {
            Ok(value)
        } else {
            Err(ConfigError::new(
                field,
                DebugDisplay(&value),
                format!("between {:?} and {:?}", min, max),
            ))
        }
    }

    /// The name of the rejected setting, as spelled by the builder method.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::ConfigError;
    ///
    /// assert_eq!(ConfigError::new("workers", 0, "at least 1").field(), "workers");
    /// ```
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rejected value, formatted.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::ConfigError;
    ///
    /// assert_eq!(ConfigError::new("workers", 0, "at least 1").value(), "0");
    /// ```
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What would have been accepted, e.g. `"at least 1"`.
    ///
    /// # Examples
    ///
    /// ```
    /// use async_patterns_core::ConfigError;
    ///
    /// assert_eq!(ConfigError::new("workers", 0, "at least 1").expected(), "at least 1");
    /// ```
    pub fn expected(&self) -> &str {
        &self.expected
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid `{}`: got {}, expected {}",
            self.field, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// Formats a value with `Debug`, so that `Duration`s and floats read the same
/// in the value and in the expected range.
struct DebugDisplay<'a, T>(&'a T);

impl<T: fmt::Debug> fmt::Display for DebugDisplay<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn at_least_names_field_value_and_bound() {
        let err = ConfigError::at_least("max_delay", Duration::ZERO, Duration::from_millis(1))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `max_delay`: got 0ns, expected at least 1ms"
        );
    }

    #[test]
    fn in_range_rejects_nan() {
        assert!(ConfigError::in_range("jitter", f64::NAN, 0.0, 1.0).is_err());
    }

    #[test]
    fn in_range_accepts_both_bounds() {
        assert_eq!(ConfigError::in_range("n", 1, 1, 3), Ok(1));
        assert_eq!(ConfigError::in_range("n", 3, 1, 3), Ok(3));
        assert!(ConfigError::in_range("n", 4, 1, 3).is_err());
    }
}
