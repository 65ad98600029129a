//! What each recipient is sent: the campaign's templates compiled once (checked before any
//! send), the variant's subject and body chosen (a variant without its own falls back to
//! `spec.message`), and the template fields filled from the recipient's Subscription now.

use flotilla_crds::Plan;
use flotilla_crds::campaign::CampaignSpec;
use jiff::Timestamp;

use super::audience::SubscriptionView;
use super::template::{
    CampaignFields, ContactFields, PlanFields, Recipient, Renderer, SubscriptionFields,
    TemplateError,
};

const SUBJECT: &str = "spec.message.subject";
const BODY: &str = "spec.message.body";

/// A campaign's compiled templates.
#[derive(Debug)]
pub struct Content {
    renderer: Renderer,
    /// Per variant: the template field of its subject (if any) and of its body.
    fields: Vec<(Option<String>, String)>,
    names: Vec<String>,
}

/// One rendered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The subject, when the campaign has one.
    pub subject: Option<String>,
    /// The body.
    pub body: String,
}

impl Content {
    /// Compiles every template of `spec`.
    ///
    /// # Errors
    /// The first template that does not compile or reads an unknown field, with its place.
    pub fn new(spec: &CampaignSpec) -> Result<Self, TemplateError> {
        let mut sources: Vec<(String, &str)> = vec![(BODY.to_owned(), spec.message.body.as_str())];
        let default_subject = spec.message.subject.as_deref().map(|subject| {
            sources.push((SUBJECT.to_owned(), subject));
            SUBJECT.to_owned()
        });
        let mut fields = Vec::new();
        for (i, variant) in spec.variants.iter().enumerate() {
            let subject = match &variant.subject {
                Some(subject) => {
                    let field = format!("spec.variants[{i}].subject");
                    sources.push((field.clone(), subject));
                    Some(field)
                }
                None => default_subject.clone(),
            };
            let body = match &variant.body {
                Some(body) => {
                    let field = format!("spec.variants[{i}].body");
                    sources.push((field.clone(), body));
                    field
                }
                None => BODY.to_owned(),
            };
            fields.push((subject, body));
        }
        if fields.is_empty() {
            fields.push((default_subject, BODY.to_owned()));
        }
        Ok(Self {
            renderer: Renderer::new(sources)?,
            fields,
            names: spec.variants.iter().map(|v| v.name.clone()).collect(),
        })
    }

    /// The name of variant `index` ("" for a campaign without variants).
    pub fn variant_name(&self, index: usize) -> &str {
        self.names.get(index).map_or("", String::as_str)
    }

    /// The message of variant `index` for `recipient`.
    ///
    /// # Errors
    /// A template that fails on this recipient's values (a type error the check could not
    /// see).
    pub fn render(&self, index: usize, recipient: Recipient) -> Result<Rendered, TemplateError> {
        let (subject, body) = self.fields.get(index).unwrap_or(&self.fields[0]);
        let context = Renderer::context(recipient);
        Ok(Rendered {
            subject: subject
                .as_deref()
                .map(|field| self.renderer.render_with(field, &context))
                .transpose()?,
            body: self.renderer.render_with(body, &context)?,
        })
    }
}

/// The template fields of a Subscription as it is now, in variant `variant` of `campaign`.
pub fn recipient_fields(
    subscription: SubscriptionView,
    plan: Option<&Plan>,
    campaign: &str,
    variant: &str,
    unsubscribe_url: String,
) -> Recipient {
    Recipient {
        subscription: SubscriptionFields {
            name: subscription.name.to_string(),
            phase: subscription
                .phase
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            plan: subscription.plan.to_string(),
            trial_ends_at: subscription.trial_ends_at.map(|t: Timestamp| t.to_string()),
            namespaces: subscription.namespaces,
            contact: ContactFields {
                name: subscription.contact_name,
                email: subscription.email,
                time_zone: subscription.time_zone,
            },
        },
        plan: PlanFields {
            name: subscription.plan.to_string(),
            display_name: plan
                .map(|p| p.spec.display_name.clone())
                .unwrap_or_else(|| subscription.plan.to_string()),
        },
        campaign: CampaignFields {
            name: campaign.to_owned(),
            variant: variant.to_owned(),
        },
        unsubscribe_url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> CampaignSpec {
        serde_json::from_value(value).unwrap()
    }

    fn view() -> SubscriptionView {
        SubscriptionView {
            name: "acme".into(),
            plan: "team".into(),
            contact_name: Some("Ada".into()),
            ..SubscriptionView::default()
        }
    }

    #[test]
    fn variants_fall_back_to_the_message_and_render_their_own() {
        let content = Content::new(&spec(serde_json::json!({
            "audience": {},
            "channels": {"names": ["log"]},
            "message": {"subject": "News for {{ subscription.name }}", "body": "Hi {{ subscription.contact.name }}"},
            "variants": [
                {"name": "a", "weight": 1},
                {"name": "b", "weight": 1, "body": "Hey {{ subscription.contact.name }}, {{ plan.displayName }}"},
            ],
        })))
        .unwrap();
        let fields = |v: usize| {
            recipient_fields(
                view(),
                None,
                "launch",
                content.variant_name(v),
                String::new(),
            )
        };
        let a = content.render(0, fields(0)).unwrap();
        assert_eq!(a.subject.as_deref(), Some("News for acme"));
        assert_eq!(a.body, "Hi Ada");
        let b = content.render(1, fields(1)).unwrap();
        assert_eq!(b.subject.as_deref(), Some("News for acme"));
        assert_eq!(b.body, "Hey Ada, team");
        assert_eq!(content.variant_name(1), "b");
    }

    #[test]
    fn an_unknown_field_in_a_variant_names_the_variant() {
        let error = Content::new(&spec(serde_json::json!({
            "audience": {},
            "channels": {"names": ["log"]},
            "message": {"body": "Hi"},
            "variants": [{"name": "a", "weight": 1, "body": "line one\n{{ subscription.colour }}"}],
        })))
        .unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("spec.variants[0].body: line 2:"), "{text}");
        assert!(text.contains("subscription.colour"), "{text}");
    }
}
