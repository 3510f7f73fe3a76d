//! Leader election on a `coordination.k8s.io/v1` Lease, so two controller replicas are safe:
//! only the holder reconciles. The holder renews every third of the lease; a stand-by takes the
//! lease over once it has seen the record unchanged for a whole lease duration, measured on its
//! own clock (as client-go does), so clock skew between nodes does not matter.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One participant in the election.
#[derive(Debug)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The last record seen (holder and renew time) and when it was first seen.
    observed: Mutex<Option<(String, Instant)>>,
}

impl LeaseLock {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often the holder renews.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Acquire or renew the lease; `true` while this participant holds it. A lost race
    /// (a conflict) is `false`, not an error.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() && !self.expired(&spec) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: if mine { spec.acquire_time } else { Some(now.clone()) },
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..spec
        });
        // `replace` carries the resourceVersion read above: of two racing writers one wins.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                if !mine {
                    tracing::info!(lease = %self.name, identity = %self.identity, previous = %holder, "acquired the lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether another holder's record has stood still for a whole lease duration.
    fn expired(&self, spec: &LeaseSpec) -> bool {
        let record = format!("{:?}/{:?}", spec.holder_identity, spec.renew_time.as_ref().map(|t| t.0));
        let duration = spec.lease_duration_seconds.map_or(self.duration, |s| Duration::from_secs(s.max(1) as u64));
        let mut observed = self.observed.lock().expect("lease observation");
        match observed.as_ref() {
            Some((r, since)) if *r == record => since.elapsed() > duration,
            _ => {
                *observed = Some((record, Instant::now()));
                false
            }
        }
    }

    /// Give the lease up (on shutdown), so a stand-by takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
            tracing::warn!(lease = %self.name, "could not release the lease: {e}");
        }
    }
}
