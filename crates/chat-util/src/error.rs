//! Printing an error with its causes: `Chain(&e)` displays
//! `what failed: why: the root cause`, each cause once (transport errors
//! often repeat their source's text).

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources.
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !text.is_empty() && !shown.ends_with(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| -> &(dyn Error + 'static) { e })
        }
    }

    #[test]
    fn prints_each_cause_once() {
        let root = Layer("connection refused", None);
        let mid = Layer("connection refused", Some(Box::new(root)));
        let top = Layer("cannot open the store", Some(Box::new(mid)));
        assert_eq!(
            Chain(&top).to_string(),
            "cannot open the store: connection refused"
        );
    }
}
