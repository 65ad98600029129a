//! One simulated device: a DDI agent loop as rauc-hawkbit-updater and suricatta run it —
//! poll, follow the links the server hands out, report, sleep what the server says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::Shutdown;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::counters::{Counters, Event};
use crate::spec::{DeviceProfile, FleetSpec, jittered, parse_sleep, token_for};

/// The sleep when the server's reply gave none, or when it could not be reached.
const FALLBACK_SLEEP: Duration = Duration::from_secs(30);
/// Feedback refused with 429 or 503 is sent again this often at most.
const FEEDBACK_ATTEMPTS: u32 = 5;

pub(crate) struct Agent {
    pub http: reqwest::Client,
    pub spec: Arc<FleetSpec>,
    pub profile: DeviceProfile,
    pub counters: Arc<Counters>,
    pub requests: Arc<Semaphore>,
    pub stop: Shutdown,
    base: String,
    authorization: String,
    current_version: String,
    boot_count: u64,
    reboots_left: u32,
    finished_action: Option<String>,
    polls: u64,
    etag: Option<String>,
    last_poll: Value,
}

/// Why a request gave no usable answer.
enum Failure {
    /// An HTTP answer other than 2xx/304, with the server's `Retry-After`.
    Status(StatusCode, Option<Duration>),
    Transport,
    Stopped,
}

struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
}

/// What a poll asked the device to do.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PollLinks {
    pub sleep: Option<Duration>,
    pub deployment: Option<String>,
    pub cancel: Option<String>,
    pub config_data: Option<String>,
}

/// The links and sleep of a poll reply; unknown links are ignored, as agents do.
pub(crate) fn read_poll(body: &Value) -> PollLinks {
    let href = |name: &str| body["_links"][name]["href"].as_str().map(str::to_owned);
    PollLinks {
        sleep: body["config"]["polling"]["sleep"]
            .as_str()
            .and_then(parse_sleep),
        deployment: href("deploymentBase"),
        cancel: href("cancelAction"),
        config_data: href("configData"),
    }
}

/// The action id in a `.../deploymentBase/{id}?c=...` or `.../cancelAction/{id}` link.
pub(crate) fn action_in(href: &str) -> Option<&str> {
    let path = href.split(['?', '#']).next()?;
    let id = path.rsplit('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// A deployment's version and the artifact's download link.
pub(crate) fn read_deployment(body: &Value) -> (Option<String>, Option<String>) {
    let chunk = &body["deployment"]["chunks"][0];
    let version = chunk["version"].as_str().map(str::to_owned);
    let links = &chunk["artifacts"][0]["_links"];
    let download = links["download"]["href"]
        .as_str()
        .or_else(|| links["download-http"]["href"].as_str())
        .map(str::to_owned);
    (version, download)
}

/// The `proceeding` step reported after `done` of `steps`: the details name the phase, as
/// agents' messages do (the gateway maps "install" and "verif" to its states).
pub(crate) fn step_detail(done: u32, steps: u32) -> &'static str {
    if done * 2 < steps {
        "Downloading artifact"
    } else if done < steps {
        "Installing image"
    } else {
        "Verifying image"
    }
}

impl Agent {
    pub fn new(
        http: reqwest::Client,
        spec: Arc<FleetSpec>,
        profile: DeviceProfile,
        counters: Arc<Counters>,
        requests: Arc<Semaphore>,
        stop: Shutdown,
    ) -> Self {
        let base = format!(
            "{}/{}/controller/v1/{}",
            spec.gateway_url.trim_end_matches('/'),
            spec.namespace,
            profile.name
        );
        let authorization = format!("TargetToken {}", token_for(spec.seed, &profile.name));
        Self {
            current_version: spec.starting_version.clone(),
            http,
            spec,
            profile,
            counters,
            requests,
            stop,
            base,
            authorization,
            boot_count: 1,
            reboots_left: 0,
            finished_action: None,
            polls: 0,
            etag: None,
            last_poll: Value::Null,
        }
    }

    pub async fn run(mut self) {
        let start = self.spec.start_spread.mul_f64(crate::spec::fraction(
            self.spec.seed,
            &self.profile.name,
            "start",
        ));
        if !self.pause(start).await {
            return;
        }
        loop {
            let sleep = match self.poll().await {
                Ok(links) => {
                    let sleep = links.sleep.unwrap_or(FALLBACK_SLEEP);
                    if self.follow(links).await.is_err() && self.stop.is_triggered() {
                        return;
                    }
                    sleep
                }
                Err(Failure::Stopped) => return,
                Err(Failure::Status(_, Some(retry_after))) => retry_after,
                Err(_) => FALLBACK_SLEEP,
            };
            if self.reboots_left > 0 {
                // A reboot loop: the device comes back up, reports its boot, goes down again.
                self.reboots_left -= 1;
                self.boot_count += 1;
                let _ = self
                    .report_attributes(&format!("{}/configData", self.base))
                    .await;
            }
            let sleep = jittered(sleep, self.spec.seed, &self.profile.name, self.polls);
            if !self.pause(sleep).await {
                return;
            }
        }
    }

    /// Sleeps unless stopped; whether to go on.
    async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => !self.stop.is_triggered(),
            () = self.stop.signalled() => false,
        }
    }

    async fn poll(&mut self) -> Result<PollLinks, Failure> {
        let url = self.base.clone();
        let etag = self.etag.clone();
        let answer = self.send(Method::GET, &url, None, etag.as_deref()).await?;
        self.polls += 1;
        self.counters.count(Event::Poll);
        if answer.status == StatusCode::NOT_MODIFIED {
            self.counters.count(Event::NotModified);
        } else {
            self.etag = answer.etag;
            self.last_poll = answer.body;
        }
        Ok(read_poll(&self.last_poll))
    }

    async fn follow(&mut self, links: PollLinks) -> Result<(), Failure> {
        if let Some(href) = &links.cancel {
            self.cancel(href).await?;
        }
        if let Some(href) = &links.config_data {
            self.report_attributes(href).await?;
        }
        if let Some(href) = &links.deployment
            && action_in(href) != self.finished_action.as_deref()
        {
            self.deploy(href).await?;
        }
        Ok(())
    }

    fn attributes(&self) -> BTreeMap<&'static str, String> {
        let revision =
            1 + (crate::spec::fraction(self.spec.seed, &self.profile.name, "hw") * 3.0) as u32;
        BTreeMap::from([
            (
                "hardwareRevision",
                format!("{}-rev{revision}", self.profile.model),
            ),
            ("serial", format!("SIM{:012}", self.serial())),
            ("freeSpaceBytes", self.spec.free_space_bytes.to_string()),
            ("bootCount", self.boot_count.to_string()),
            ("firmwareVersion", self.current_version.clone()),
        ])
    }

    fn serial(&self) -> u64 {
        (crate::spec::fraction(self.spec.seed, &self.profile.name, "serial") * 1e12) as u64
    }

    async fn report_attributes(&self, href: &str) -> Result<(), Failure> {
        let body = json!({"mode": "merge", "data": self.attributes()});
        self.send(Method::PUT, href, Some(body), None).await?;
        self.counters.count(Event::ConfigData);
        Ok(())
    }

    /// Confirms a cancel: whatever ran is abandoned.
    async fn cancel(&mut self, href: &str) -> Result<(), Failure> {
        let href = href.split('?').next().unwrap_or(href).to_owned();
        let answer = self.send(Method::GET, &href, None, None).await?;
        self.counters.count(Event::Cancel);
        let stop_id = answer.body["cancelAction"]["stopId"]
            .as_str()
            .or_else(|| action_in(&href))
            .unwrap_or_default()
            .to_owned();
        let feedback = json!({"id": stop_id, "status": {
            "execution": "closed", "result": {"finished": "success"},
            "details": ["Update cancelled on request"]}});
        self.feedback(&format!("{href}/feedback"), feedback, Event::Canceled)
            .await?;
        self.finished_action = Some(stop_id);
        Ok(())
    }

    async fn deploy(&mut self, href: &str) -> Result<(), Failure> {
        let answer = self.send(Method::GET, href, None, None).await?;
        self.counters.count(Event::Deployment);
        let action = answer.body["id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| action_in(href).map(str::to_owned))
            .unwrap_or_default();
        let (version, download) = read_deployment(&answer.body);
        let path = href.split('?').next().unwrap_or(href);
        let feedback_url = format!("{path}/feedback");
        let steps = self.spec.progress_steps.max(1);
        let step = self.spec.update_time(&self.profile) / steps;
        self.progress(&feedback_url, &action, 0, steps).await?;
        let downloaded = match (&download, self.spec.download_artifacts) {
            (Some(url), true) => self.download(url).await,
            _ => true,
        };
        for done in 1..=steps {
            if !downloaded {
                break;
            }
            if !self.pause(step).await {
                return Err(Failure::Stopped);
            }
            // A heartbeat between steps, where a cancel reaches the device.
            let links = self.poll().await?;
            if let Some(cancel) = &links.cancel
                && action_in(cancel) == Some(action.as_str())
            {
                return self.cancel(cancel).await;
            }
            self.progress(&feedback_url, &action, done, steps).await?;
        }
        let from = self.current_version.clone();
        let fails = !downloaded || self.spec.update_fails(&self.profile, &from, &action);
        let feedback = if fails {
            let reason = if downloaded {
                format!("simulated failure: {} from {from}", self.profile.model)
            } else {
                "artifact download failed".to_owned()
            };
            json!({"id": action, "status": {
                "execution": "closed", "result": {"finished": "failure"},
                "code": self.spec.failure_code,
                "details": [format!("errorCode={}", self.spec.failure_code), reason]}})
        } else {
            json!({"id": action, "status": {
                "execution": "closed", "result": {"finished": "success"},
                "details": [format!("Rebooted into {}", version.as_deref().unwrap_or("?"))]}})
        };
        let event = if fails {
            Event::Failed
        } else {
            Event::Succeeded
        };
        self.feedback(&feedback_url, feedback, event).await?;
        self.finished_action = Some(action);
        if !fails {
            if let Some(version) = version {
                self.current_version = version;
            }
            self.boot_count += 1;
            if self.profile.reboot_loop {
                self.reboots_left = self.spec.reboot_loop_boots;
            }
            self.report_attributes(&format!("{}/configData", self.base))
                .await?;
        }
        Ok(())
    }

    async fn progress(
        &self,
        url: &str,
        action: &str,
        done: u32,
        steps: u32,
    ) -> Result<(), Failure> {
        let feedback = json!({"id": action, "status": {
            "execution": "proceeding",
            "result": {"finished": "none", "progress": {"cnt": done, "of": steps}},
            "details": [step_detail(done, steps)]}});
        self.feedback(url, feedback, Event::Proceeding).await
    }

    /// Sends feedback, again after a `429` or `503` (the server's `Retry-After`): a result
    /// lost there would leave the action open for ever.
    async fn feedback(&self, url: &str, body: Value, event: Event) -> Result<(), Failure> {
        let mut attempt = 1;
        loop {
            match self.send(Method::POST, url, Some(body.clone()), None).await {
                Ok(_) => {
                    self.counters.count(event);
                    return Ok(());
                }
                Err(Failure::Status(status, retry_after))
                    if attempt < FEEDBACK_ATTEMPTS
                        && (status == StatusCode::TOO_MANY_REQUESTS
                            || status == StatusCode::SERVICE_UNAVAILABLE) =>
                {
                    attempt += 1;
                    if !self
                        .pause(retry_after.unwrap_or(Duration::from_secs(1)))
                        .await
                    {
                        return Err(Failure::Stopped);
                    }
                }
                Err(failure) => return Err(failure),
            }
        }
    }

    /// Fetches the artifact (the body is counted, not kept); whether it arrived.
    async fn download(&self, url: &str) -> bool {
        let Ok(_permit) = self.requests.acquire().await else {
            return false;
        };
        match self.http.get(url).send().await {
            Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
            Ok(response) => {
                self.counters.error_status(response.status().as_u16());
                false
            }
            Err(_) => {
                self.counters.transport_error();
                false
            }
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Value>,
        etag: Option<&str>,
    ) -> Result<Answer, Failure> {
        let _permit = tokio::select! {
            permit = self.requests.acquire() => permit.map_err(|_| Failure::Stopped)?,
            () = self.stop.signalled() => return Err(Failure::Stopped),
        };
        let mut request = self
            .http
            .request(method, url)
            .header(header::AUTHORIZATION, &self.authorization)
            .header(header::ACCEPT, "application/hal+json");
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = tokio::select! {
            response = request.send() => response,
            () = self.stop.signalled() => return Err(Failure::Stopped),
        };
        let Ok(response) = response else {
            self.counters.transport_error();
            return Err(Failure::Transport);
        };
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header(header::ETAG);
        let retry_after = header(header::RETRY_AFTER)
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        if !(status.is_success() || status == StatusCode::NOT_MODIFIED) {
            self.counters.error_status(status.as_u16());
            tracing::debug!(device = %self.profile.name, %url, %status, "request refused");
            return Err(Failure::Status(status, retry_after));
        }
        let Ok(bytes) = response.bytes().await else {
            self.counters.transport_error();
            return Err(Failure::Transport);
        };
        Ok(Answer {
            status,
            etag,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_reply_is_read_as_hawkbit_sends_it() {
        let links = read_poll(&json!({
            "config": {"polling": {"sleep": "00:00:30"}},
            "_links": {"deploymentBase": {"href": "http://g/t/controller/v1/d/deploymentBase/7?c=ab"},
                       "configData": {"href": "http://g/t/controller/v1/d/configData"},
                       "installedBase": {"href": "http://g/x"}}
        }));
        assert_eq!(links.sleep, Some(Duration::from_secs(30)));
        assert_eq!(action_in(links.deployment.as_deref().unwrap()), Some("7"));
        assert!(links.cancel.is_none());
        assert!(links.config_data.unwrap().ends_with("/configData"));
        assert_eq!(read_poll(&json!({"config": {}})), PollLinks::default());
    }

    #[test]
    fn a_deployment_names_its_version_and_download() {
        let body = json!({"id": "7", "deployment": {"download": "forced", "update": "forced",
            "chunks": [{"part": "os", "version": "2.0.0", "name": "r", "artifacts": [
                {"filename": "f", "size": 1, "hashes": {"sha256": "x"},
                 "_links": {"download-http": {"href": "http://fw/f"}}}]}]}});
        assert_eq!(
            read_deployment(&body),
            (Some("2.0.0".into()), Some("http://fw/f".into()))
        );
        assert_eq!(read_deployment(&json!({})), (None, None));
    }

    #[test]
    fn progress_walks_through_the_phases() {
        let phases: Vec<_> = (0..=4).map(|d| step_detail(d, 4)).collect();
        assert_eq!(
            phases,
            [
                "Downloading artifact",
                "Downloading artifact",
                "Installing image",
                "Installing image",
                "Verifying image"
            ]
        );
        assert_eq!(step_detail(1, 1), "Verifying image");
    }
}
