//! Placement constraints: parsing `key==value` / `key!=value` expressions, and what they mean.
//!
//! Semantics follow Docker Swarm: whitespace around key and value is ignored, values match
//! case-insensitively (ASCII), `node.labels.x!=v` holds on a node without label `x` while
//! `node.labels.x==v` does not. A value starting with `~` (`node.labels.zone==~a`) makes the
//! constraint soft: preferred, but dropped when no node satisfies it. This is the one place
//! constraint expressions are parsed; the manager calls [`parse_constraints`] to reject bad input.

use std::fmt;

use crate::NodeInfo;

/// A node attribute a constraint or a placement preference can name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// `node.id`.
    NodeId,
    /// `node.hostname`.
    NodeHostname,
    /// `node.role` (`manager` or `worker`).
    NodeRole,
    /// `node.platform.os`.
    NodeOs,
    /// `node.platform.arch`.
    NodeArch,
    /// `node.labels.<key>`.
    NodeLabel(String),
    /// `engine.labels.<key>`.
    EngineLabel(String),
}

const NODE_LABELS: &str = "node.labels.";
const ENGINE_LABELS: &str = "engine.labels.";

impl Attribute {
    /// Parses a key such as `node.role` or `node.labels.zone` (prefixes are case-insensitive).
    pub fn parse(key: &str) -> Result<Attribute, ConstraintError> {
        let key = key.trim();
        let lower = key.to_ascii_lowercase();
        let attribute = match lower.as_str() {
            "node.id" => Attribute::NodeId,
            "node.hostname" => Attribute::NodeHostname,
            "node.role" => Attribute::NodeRole,
            "node.platform.os" => Attribute::NodeOs,
            "node.platform.arch" => Attribute::NodeArch,
            _ if lower.starts_with(NODE_LABELS) && key.len() > NODE_LABELS.len() => {
                Attribute::NodeLabel(key[NODE_LABELS.len()..].to_owned())
            }
            _ if lower.starts_with(ENGINE_LABELS) && key.len() > ENGINE_LABELS.len() => {
                Attribute::EngineLabel(key[ENGINE_LABELS.len()..].to_owned())
            }
            _ => {
                return Err(ConstraintError::Key {
                    key: key.to_owned(),
                })
            }
        };
        Ok(attribute)
    }

    /// The attribute's value on `node`, if it has one (labels may be missing).
    pub fn value_on<'a>(&self, node: &'a NodeInfo) -> Option<&'a str> {
        match self {
            Attribute::NodeId => Some(&node.id),
            Attribute::NodeHostname => Some(&node.hostname),
            Attribute::NodeRole => Some(node.role.as_str()),
            Attribute::NodeOs => Some(&node.os),
            Attribute::NodeArch => Some(&node.arch),
            Attribute::NodeLabel(key) => node.labels.get(key).map(String::as_str),
            Attribute::EngineLabel(key) => node.engine_labels.get(key).map(String::as_str),
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::NodeId => f.write_str("node.id"),
            Attribute::NodeHostname => f.write_str("node.hostname"),
            Attribute::NodeRole => f.write_str("node.role"),
            Attribute::NodeOs => f.write_str("node.platform.os"),
            Attribute::NodeArch => f.write_str("node.platform.arch"),
            Attribute::NodeLabel(key) => write!(f, "{NODE_LABELS}{key}"),
            Attribute::EngineLabel(key) => write!(f, "{ENGINE_LABELS}{key}"),
        }
    }
}

/// The comparison in a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `==`: the attribute exists and equals the value.
    Eq,
    /// `!=`: the attribute is missing or differs from the value.
    Ne,
}

impl Operator {
    /// The operator as written: `==` or `!=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "==",
            Operator::Ne => "!=",
        }
    }
}

/// One parsed placement constraint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Constraint {
    /// The node attribute compared.
    pub attribute: Attribute,
    /// Equal or not equal.
    pub operator: Operator,
    /// The value compared with, as written (matching ignores ASCII case).
    pub value: String,
    /// Soft constraints (`==~`, `!=~`) are dropped when no node satisfies them.
    pub soft: bool,
}

impl Constraint {
    /// Whether `node` satisfies this constraint (the reference semantics; the scheduler's hot path
    /// evaluates the same rule on interned values).
    pub fn matches(&self, node: &NodeInfo) -> bool {
        let found = self.attribute.value_on(node);
        let equal = found.is_some_and(|v| v.eq_ignore_ascii_case(&self.value));
        match self.operator {
            Operator::Eq => equal,
            Operator::Ne => !equal,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let soft = if self.soft { "~" } else { "" };
        write!(
            f,
            "{}{}{soft}{}",
            self.attribute,
            self.operator.as_str(),
            self.value
        )
    }
}

/// Why a constraint or placement preference was rejected; its `Display` is one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstraintError {
    /// The expression is not of the form `key==value` or `key!=value`.
    Expression {
        /// The expression as given.
        expression: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The key names no attribute the scheduler knows.
    Key {
        /// The key as given (trimmed).
        key: String,
    },
    /// A placement preference is not of the form `spread=<key>` with a known key.
    Preference {
        /// The preference as given.
        preference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for ConstraintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstraintError::Expression { expression, reason } => {
                write!(f, "invalid constraint expression {expression:?}: {reason}")
            }
            ConstraintError::Key { key } => write!(f, "invalid constraint key {key:?}"),
            ConstraintError::Preference { preference, reason } => {
                write!(f, "invalid placement preference {preference:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for ConstraintError {}

/// Parses one constraint expression such as `node.labels.zone==a` or `node.role != manager`.
pub fn parse_constraint(expression: &str) -> Result<Constraint, ConstraintError> {
    let invalid = |reason| ConstraintError::Expression {
        expression: expression.to_owned(),
        reason,
    };
    let eq = expression.find("==").map(|at| (at, Operator::Eq));
    let ne = expression.find("!=").map(|at| (at, Operator::Ne));
    let (at, operator) = match (eq, ne) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => return Err(invalid("expected \"==\" or \"!=\"")),
    };
    let key = &expression[..at];
    let rest = expression[at + 2..].trim_start();
    let (soft, value) = match rest.strip_prefix('~') {
        Some(value) => (true, value.trim()),
        None => (false, rest.trim()),
    };
    if key.trim().is_empty() {
        return Err(invalid("missing key"));
    }
    if value.is_empty() {
        return Err(invalid("missing value"));
    }
    if value.contains("==") || value.contains("!=") {
        return Err(invalid("more than one operator"));
    }
    let attribute = Attribute::parse(key)?;
    Ok(Constraint {
        attribute,
        operator,
        value: value.to_owned(),
        soft,
    })
}

/// Parses a service's constraint expressions; the first bad one is the error.
pub fn parse_constraints(expressions: &[String]) -> Result<Vec<Constraint>, ConstraintError> {
    expressions.iter().map(|e| parse_constraint(e)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(expr: &str) -> Constraint {
        parse_constraint(expr).unwrap()
    }

    fn message(expr: &str) -> String {
        parse_constraint(expr).unwrap_err().to_string()
    }

    #[test]
    fn whitespace_around_key_and_value_is_ignored() {
        let c = parse("  node.labels.zone   ==  a ");
        assert_eq!(c.attribute, Attribute::NodeLabel("zone".into()));
        assert_eq!(c.operator, Operator::Eq);
        assert_eq!(c.value, "a");
        assert!(!c.soft);
    }

    #[test]
    fn every_documented_key_parses() {
        assert_eq!(parse("node.id==x").attribute, Attribute::NodeId);
        assert_eq!(parse("node.hostname!=x").attribute, Attribute::NodeHostname);
        assert_eq!(parse("node.role==manager").attribute, Attribute::NodeRole);
        assert_eq!(
            parse("node.platform.os==linux").attribute,
            Attribute::NodeOs
        );
        assert_eq!(
            parse("node.platform.arch==x86_64").attribute,
            Attribute::NodeArch
        );
        assert_eq!(
            parse("engine.labels.ssd==true").attribute,
            Attribute::EngineLabel("ssd".into())
        );
        assert_eq!(parse("Node.Role==worker").attribute, Attribute::NodeRole);
    }

    #[test]
    fn label_keys_keep_their_case() {
        assert_eq!(
            parse("NODE.LABELS.Zone==a").attribute,
            Attribute::NodeLabel("Zone".into())
        );
    }

    #[test]
    fn tilde_marks_a_soft_constraint() {
        let c = parse("node.labels.zone==~a");
        assert!(c.soft);
        assert_eq!(c.value, "a");
        let c = parse("node.labels.zone != ~ b");
        assert!(c.soft);
        assert_eq!((c.operator, c.value.as_str()), (Operator::Ne, "b"));
        assert_eq!(c.to_string(), "node.labels.zone!=~b");
    }

    #[test]
    fn bad_constraint_expression_is_rejected_with_message() {
        assert_eq!(
            message("node.labels.zone=a"),
            r#"invalid constraint expression "node.labels.zone=a": expected "==" or "!=""#
        );
        assert_eq!(
            message("node.foo==x"),
            r#"invalid constraint key "node.foo""#
        );
        assert_eq!(
            message("node.labels.==x"),
            r#"invalid constraint key "node.labels.""#
        );
        assert_eq!(
            message("node.role=="),
            r#"invalid constraint expression "node.role==": missing value"#
        );
        assert_eq!(
            message("==x"),
            r#"invalid constraint expression "==x": missing key"#
        );
        assert_eq!(
            message("node.role==a==b"),
            r#"invalid constraint expression "node.role==a==b": more than one operator"#
        );
    }

    #[test]
    fn parse_constraints_reports_the_first_bad_expression() {
        let exprs = vec![
            "node.role==worker".to_owned(),
            "zone".to_owned(),
            "x==y".to_owned(),
        ];
        assert_eq!(
            parse_constraints(&exprs).unwrap_err().to_string(),
            r#"invalid constraint expression "zone": expected "==" or "!=""#
        );
        assert_eq!(parse_constraints(&exprs[..1]).unwrap().len(), 1);
    }

    #[test]
    fn values_match_ignoring_ascii_case() {
        let mut node = NodeInfo::new("n1");
        node.labels.insert("zone".into(), "EU-West".into());
        assert!(parse("node.labels.zone==eu-west").matches(&node));
        assert!(!parse("node.labels.zone!=eu-WEST").matches(&node));
        assert!(parse("node.role==WORKER").matches(&node));
    }

    #[test]
    fn missing_label_satisfies_not_equal_but_not_equal_to() {
        let node = NodeInfo::new("n1");
        assert!(parse("node.labels.zone!=a").matches(&node));
        assert!(!parse("node.labels.zone==a").matches(&node));
    }
}
