//! Message templates: minijinja, strict about undefined values, over what a recipient is
//! ([`Recipient`]). A campaign's templates are checked before anything is sent — syntax, and
//! every variable they read against the fields a recipient has, with the line — so a typo
//! stops the campaign with a condition instead of sending "Dear ," to 100,000 people.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use minijinja::value::{Enumerator, Object};
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;

/// What a template can read about its recipient: `{{ subscription.contact.name }}`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    pub subscription: SubscriptionFields,
    pub plan: PlanFields,
    pub campaign: CampaignFields,
    /// The one-click unsubscribe link of this message.
    pub unsubscribe_url: String,
}

/// The recipient's Subscription.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionFields {
    pub name: String,
    /// The phase (Trialing, Active, PastDue, ...).
    pub phase: String,
    /// The Plan's name.
    pub plan: String,
    /// RFC 3339; empty when not trialing.
    pub trial_ends_at: Option<String>,
    pub namespaces: Vec<String>,
    pub contact: ContactFields,
}

/// The Subscription's contact.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactFields {
    pub name: Option<String>,
    pub email: Option<String>,
    pub time_zone: Option<String>,
}

/// The recipient's Plan.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanFields {
    pub name: String,
    pub display_name: String,
}

/// The campaign sending.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CampaignFields {
    pub name: String,
    /// The recipient's variant (empty for a campaign without variants).
    pub variant: String,
}

/// Why a template cannot be used; `field` is where it is in the spec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// Not a template.
    #[error("{field}: line {line}: {message}")]
    Syntax {
        field: String,
        line: usize,
        message: String,
    },
    /// Reads a field recipients do not have.
    #[error("{field}: line {line}: unknown field {name:?}; known fields: {known}")]
    UnknownField {
        field: String,
        line: usize,
        name: String,
        known: String,
    },
}

/// Renders templates strictly. One per campaign generation; cheap to render with.
pub struct Renderer {
    env: Environment<'static>,
    /// Templates that read no field, rendered once: the same text for everyone.
    constant: HashMap<String, String>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // An absent optional field (no trial, no contact name) renders as nothing, not "none".
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env
}

/// Every dotted path a recipient has (`subscription.contact.name`, ...).
fn known_paths() -> BTreeSet<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
        if !prefix.is_empty() {
            out.insert(prefix.to_owned());
        }
        if let serde_json::Value::Object(map) = value {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                walk(&path, child, out);
            }
        }
    }
    let sample = serde_json::to_value(sample()).expect("a recipient serializes");
    let mut out = BTreeSet::new();
    walk("", &sample, &mut out);
    out
}

/// A recipient with every field set, to check templates against.
fn sample() -> Recipient {
    Recipient {
        subscription: SubscriptionFields {
            name: "acme".into(),
            phase: "Trialing".into(),
            plan: "team".into(),
            trial_ends_at: Some("2030-01-01T00:00:00Z".into()),
            namespaces: vec!["acme-prod".into()],
            contact: ContactFields {
                name: Some("Ada".into()),
                email: Some("ada@example.com".into()),
                time_zone: Some("Europe/Berlin".into()),
            },
        },
        plan: PlanFields {
            name: "team".into(),
            display_name: "Team".into(),
        },
        campaign: CampaignFields {
            name: "launch".into(),
            variant: "a".into(),
        },
        unsubscribe_url: "https://example.com/u/token".into(),
    }
}

fn line_of(source: &str, name: &str) -> usize {
    let last = name.rsplit('.').next().unwrap_or(name);
    source
        .lines()
        .position(|line| line.contains(name))
        .or_else(|| source.lines().position(|line| line.contains(last)))
        .map_or(1, |i| i + 1)
}

impl Renderer {
    /// Checks and adds every template: `(field, source)`, e.g.
    /// `("spec.message.body", "Dear {{ subscription.contact.name }}")`. The first problem is
    /// returned.
    pub fn new<'a>(
        templates: impl IntoIterator<Item = (String, &'a str)>,
    ) -> Result<Self, TemplateError> {
        let mut env = environment();
        let known = known_paths();
        let sample = Renderer::context(sample());
        let mut constant = HashMap::new();
        for (field, source) in templates {
            env.add_template_owned(field.clone(), source.to_owned())
                .map_err(|e| syntax(&field, &e))?;
            let template = env.get_template(&field).expect("just added");
            let read = template.undeclared_variables(true);
            let reads_nothing = read.is_empty();
            let mut unknown: Vec<_> = read.into_iter().filter(|v| !known.contains(v)).collect();
            unknown.sort();
            if let Some(name) = unknown.into_iter().next() {
                let known = known
                    .iter()
                    .filter(|p| p.contains('.') || *p == "unsubscribeUrl")
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(TemplateError::UnknownField {
                    line: line_of(source, &name),
                    field,
                    name,
                    known,
                });
            }
            // What the static check cannot see (a filter that does not exist, a type error).
            let text = template.render(&sample).map_err(|e| syntax(&field, &e))?;
            if reads_nothing {
                constant.insert(field, text);
            }
        }
        Ok(Self { env, constant })
    }

    /// Renders the template added as `field` for `recipient`.
    pub fn render(&self, field: &str, recipient: &Recipient) -> Result<String, TemplateError> {
        self.render_with(field, &Self::context(recipient.clone()))
    }

    /// The template context of `recipient`: build it once for every field of one message.
    /// Fields become template values only when a template reads them (most read one or two
    /// of the dozen), which is what a message costs at 10,000 messages a second.
    pub fn context(recipient: Recipient) -> Value {
        Value::from_object(Fields {
            recipient: Arc::new(recipient),
            at: Level::Root,
        })
    }

    /// Renders the template added as `field` with a [`Self::context`].
    pub fn render_with(&self, field: &str, context: &Value) -> Result<String, TemplateError> {
        if let Some(text) = self.constant.get(field) {
            return Ok(text.clone());
        }
        let template = self
            .env
            .get_template(field)
            .map_err(|e| syntax(field, &e))?;
        template.render(context).map_err(|e| syntax(field, &e))
    }
}

/// One level of a [`Recipient`] as a template object. Its keys are the camelCase names the
/// `Serialize` derive gives (what [`known_paths`] checks templates against); a test holds
/// the two in step.
#[derive(Debug)]
struct Fields {
    recipient: Arc<Recipient>,
    at: Level,
}

#[derive(Clone, Copy, Debug)]
enum Level {
    Root,
    Subscription,
    Contact,
    Plan,
    Campaign,
}

impl Fields {
    fn child(&self, at: Level) -> Value {
        Value::from_object(Fields {
            recipient: Arc::clone(&self.recipient),
            at,
        })
    }
}

impl Object for Fields {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let r = &*self.recipient;
        let s = &r.subscription;
        let text = |value: &str| Some(Value::from(value));
        let optional = |value: &Option<String>| Some(Value::from(value.as_deref()));
        match (self.at, key.as_str()?) {
            (Level::Root, "subscription") => Some(self.child(Level::Subscription)),
            (Level::Root, "plan") => Some(self.child(Level::Plan)),
            (Level::Root, "campaign") => Some(self.child(Level::Campaign)),
            (Level::Root, "unsubscribeUrl") => text(&r.unsubscribe_url),
            (Level::Subscription, "name") => text(&s.name),
            (Level::Subscription, "phase") => text(&s.phase),
            (Level::Subscription, "plan") => text(&s.plan),
            (Level::Subscription, "trialEndsAt") => optional(&s.trial_ends_at),
            (Level::Subscription, "namespaces") => Some(Value::from(s.namespaces.clone())),
            (Level::Subscription, "contact") => Some(self.child(Level::Contact)),
            (Level::Contact, "name") => optional(&s.contact.name),
            (Level::Contact, "email") => optional(&s.contact.email),
            (Level::Contact, "timeZone") => optional(&s.contact.time_zone),
            (Level::Plan, "name") => text(&r.plan.name),
            (Level::Plan, "displayName") => text(&r.plan.display_name),
            (Level::Campaign, "name") => text(&r.campaign.name),
            (Level::Campaign, "variant") => text(&r.campaign.variant),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(match self.at {
            Level::Root => &["subscription", "plan", "campaign", "unsubscribeUrl"],
            Level::Subscription => &[
                "name",
                "phase",
                "plan",
                "trialEndsAt",
                "namespaces",
                "contact",
            ],
            Level::Contact => &["name", "email", "timeZone"],
            Level::Plan => &["name", "displayName"],
            Level::Campaign => &["name", "variant"],
        })
    }
}

fn syntax(field: &str, error: &minijinja::Error) -> TemplateError {
    TemplateError::Syntax {
        field: field.to_owned(),
        line: error.line().unwrap_or(1),
        message: match error.detail() {
            Some(detail) => format!("{}: {detail}", error.kind()),
            None => error.kind().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(source: &str) -> Result<Renderer, TemplateError> {
        Renderer::new([("spec.message.body".to_owned(), source)])
    }

    #[test]
    fn renders_the_recipients_fields_and_absent_ones_as_nothing() {
        let renderer = body(
            "Dear {{ subscription.contact.name }},\n\
             your {{ plan.displayName }} trial ends {{ subscription.trialEndsAt }}.\n\
             {% for ns in subscription.namespaces %}[{{ ns }}]{% endfor %}",
        )
        .unwrap();
        let mut recipient = sample();
        recipient.subscription.trial_ends_at = None;
        recipient.subscription.namespaces = vec!["a".into(), "b".into()];
        assert_eq!(
            renderer.render("spec.message.body", &recipient).unwrap(),
            "Dear Ada,\nyour Team trial ends .\n[a][b]"
        );
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_line_even_in_a_branch_not_taken() {
        let error =
            body("Hello\n{% if false %}{{ subscription.contact.nmae }}{% endif %}").unwrap_err();
        let TemplateError::UnknownField {
            field, line, name, ..
        } = &error
        else {
            panic!("{error}")
        };
        assert_eq!(
            (field.as_str(), *line, name.as_str()),
            ("spec.message.body", 2, "subscription.contact.nmae")
        );
        assert!(
            error.to_string().contains("subscription.contact.name"),
            "{error}"
        );
        assert!(matches!(
            body("{{ customer }}"),
            Err(TemplateError::UnknownField { .. })
        ));
    }

    #[test]
    fn syntax_errors_and_unknown_filters_name_the_field_and_line() {
        let error = Renderer::new([
            ("spec.message.subject".to_owned(), "Hi"),
            ("spec.variants[0].body".to_owned(), "ok\n{{ plan.name "),
        ])
        .unwrap_err();
        assert!(
            matches!(&error, TemplateError::Syntax { field, line: 2, .. } if field == "spec.variants[0].body"),
            "{error:?}"
        );
        let error = body("{{ plan.name | shout }}").unwrap_err();
        assert!(matches!(error, TemplateError::Syntax { .. }), "{error:?}");
    }

    #[test]
    fn the_lazy_context_reads_every_field_as_the_serialized_recipient_does() {
        let mut recipient = sample();
        recipient.subscription.namespaces = vec!["a".into(), "b".into()];
        let eager = Value::from_serialize(&recipient);
        let lazy = Renderer::context(recipient.clone());
        let env = environment();
        let paths = known_paths();
        assert!(paths.len() > 15, "{paths:?}");
        for path in paths {
            let source = format!("{{{{ {path} }}}}|{{{{ {path} is defined }}}}");
            let template = env.template_from_str(&source).unwrap();
            assert_eq!(
                template.render(&lazy).unwrap(),
                template.render(&eager).unwrap(),
                "{path}"
            );
        }
        let mut absent = recipient;
        absent.subscription.trial_ends_at = None;
        absent.subscription.contact.name = None;
        let template = env
            .template_from_str("[{{ subscription.trialEndsAt }}][{{ subscription.contact.name }}]")
            .unwrap();
        assert_eq!(template.render(Renderer::context(absent)).unwrap(), "[][]");
        let strict = env.template_from_str("{{ subscription.colour }}").unwrap();
        assert!(strict.render(Renderer::context(sample())).is_err());
    }

    #[test]
    fn a_template_reading_nothing_is_the_same_for_everyone() {
        let renderer = body("Our news").unwrap();
        assert_eq!(renderer.constant.len(), 1);
        assert_eq!(
            renderer.render("spec.message.body", &sample()).unwrap(),
            "Our news"
        );
    }

    #[test]
    fn whole_objects_and_loop_variables_are_known() {
        assert!(body("{{ subscription.contact }} {% for n in subscription.namespaces %}{{ n }}{% endfor %}").is_ok());
        assert!(body("{{ unsubscribeUrl }} {{ campaign.variant }}").is_ok());
    }
}
