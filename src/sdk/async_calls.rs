//! The async versions of the [`Agent`] calls that wait (cargo feature
//! `async`), for agents running on Tokio.
//!
//! They wait the same way as the blocking calls and give the same answers and
//! errors, but never hold a thread: READY and RESOLVE go to the agent's link
//! thread like their blocking twins, and the link thread hands the reply to
//! the waiting task through a oneshot channel. Every call needs a Tokio
//! runtime with time enabled.
//!
//! Owns only these wrappers; the requests themselves live in `super`
//! (messages, answers) and `crate::transport::agent_link` (the socket).

use std::time::Duration;

use super::{Agent, READY_RETRY_PAUSE, Resolved, SdkError, is_busy, resolve_from_env, resolved};

impl Agent {
    /// [`Agent::ready`] for async code: tells the supervisor this agent is
    /// ready and awaits the acknowledgement, retrying while it is busy.
    ///
    /// ```no_run
    /// # #[cfg(feature = "async")]
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), supervisor::sdk::SdkError> {
    /// let agent = supervisor::sdk::Agent::from_env()?;
    /// agent.ready_async().await?;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "async"))]
    /// # fn main() {}
    /// ```
    pub async fn ready_async(&self) -> Result<(), SdkError> {
        self.report_ready_async(None).await
    }

    /// [`Agent::ready_at`] for async code: READY with the endpoint this agent
    /// serves at.
    ///
    /// ```
    /// # #[cfg(feature = "async")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), supervisor::sdk::SdkError> {
    /// // Standalone (not started by the supervisor): logs and succeeds.
    /// let agent = supervisor::sdk::Agent::standalone("demo");
    /// agent.ready_at_async("tcp://127.0.0.1:41234").await?;
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "async"))]
    /// # fn main() {}
    /// ```
    pub async fn ready_at_async(&self, endpoint: &str) -> Result<(), SdkError> {
        self.report_ready_async(Some(endpoint)).await
    }

    async fn report_ready_async(&self, endpoint: Option<&str>) -> Result<(), SdkError> {
        let Some(link) = &self.link else {
            tracing::info!(agent = %self.name, ?endpoint, "standalone: ready");
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + self.call_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let outcome = link
                .handle
                .call_async(
                    self.ready_message(endpoint),
                    remaining.max(Duration::from_millis(1)),
                )
                .await;
            match outcome {
                Ok(_) => return Ok(()),
                Err(error) if is_busy(&error) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(READY_RETRY_PAUSE).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// [`Agent::resolve`] for async code: where agent `name` is and in which
    /// state.
    ///
    /// ```no_run
    /// # #[cfg(feature = "async")]
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), supervisor::sdk::SdkError> {
    /// use std::time::Duration;
    ///
    /// let agent = supervisor::sdk::Agent::from_env()?;
    /// let echo = agent.resolve_async("echo-service").await?;
    /// if let Some(endpoint) = echo.endpoint {
    ///     let reply = agent
    ///         .pool()
    ///         .request_async(&endpoint, b"ping", Duration::from_secs(1), 3)
    ///         .await?;
    ///     println!("{}", String::from_utf8_lossy(&reply));
    /// }
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "async"))]
    /// # fn main() {}
    /// ```
    pub async fn resolve_async(&self, name: &str) -> Result<Resolved, SdkError> {
        let Some(link) = &self.link else {
            return resolve_from_env(name).map(|found| self.remember(found));
        };
        let reply = link
            .handle
            .call_async(self.resolve_message(name), self.call_timeout)
            .await?;
        resolved(name, reply).map(|found| self.remember(found))
    }

    /// [`Agent::wait_for_shutdown`] for async code: resolves when shutdown is
    /// requested (true) or `timeout` passes (false).
    ///
    /// ```
    /// # #[cfg(feature = "async")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    ///
    /// let agent = supervisor::sdk::Agent::standalone("demo");
    /// let mut ticks = tokio::time::interval(Duration::from_millis(1));
    /// for _ in 0..3 {
    ///     tokio::select! {
    ///         _ = agent.wait_for_shutdown_async(None) => break,
    ///         _ = ticks.tick() => { /* one unit of work */ }
    ///     }
    /// }
    /// # }
    /// # #[cfg(not(feature = "async"))]
    /// # fn main() {}
    /// ```
    pub async fn wait_for_shutdown_async(&self, timeout: Option<Duration>) -> bool {
        self.shutdown.wait_async(timeout).await
    }
}
