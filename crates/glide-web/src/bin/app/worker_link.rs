// The model worker's life: started with the page, its messages and its crash fed to the app, and
// started again (on the same backend or the CPU) when it crashed or could not load the model.
// Included into `imp` in app.rs.

/// The callbacks a worker holds on to (dropping them would detach it).
struct WorkerCallbacks {
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(ErrorEvent)>,
}

/// Starts the model worker, its messages and its crash going to `link`.
fn spawn_worker(link: &html::Scope<App>) -> (Worker, WorkerCallbacks) {
    let worker = Worker::new("./worker_loader.js").expect("the worker script loads");
    let messages = link.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        if let Some(text) = e.data().as_string() {
            match serde_json::from_str::<FromWorker>(&text) {
                Ok(m) => messages.send_message(Msg::Worker(m)),
                Err(e) => messages.send_message(Msg::Worker(FromWorker::Error {
                    message: format!("Unreadable message from the worker: {e}"),
                })),
            }
        }
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    let crashes = link.clone();
    let on_error = Closure::<dyn FnMut(ErrorEvent)>::new(move |e: ErrorEvent| {
        e.prevent_default();
        crashes.send_message(Msg::WorkerCrashed(e.message()));
    });
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let callbacks = WorkerCallbacks {
        _on_message: on_message,
        _on_error: on_error,
    };
    (worker, callbacks)
}

/// The browser test's ways in: `window.__glide.crashWorker()` (the worker panics, see
/// `ToWorker::Crash`) and `window.__glide.loseDevice()` (the worker destroys its WebGPU device,
/// as a driver reset would, see `ToWorker::LoseDevice`).
fn test_hooks(link: &html::Scope<App>) -> Vec<Closure<dyn FnMut()>> {
    [("crashWorker", ToWorker::Crash), ("loseDevice", ToWorker::LoseDevice)]
        .into_iter()
        .map(|(name, msg)| {
            let link = link.clone();
            let hook = Closure::<dyn FnMut()>::new(move || {
                link.send_message(Msg::TestHook(msg.clone()))
            });
            publish(name, hook.as_ref());
            hook
        })
        .collect()
}

impl App {
    /// The worker died (a panic, out of memory, a lost GPU device): say so, keep everything the
    /// visitor made, offer to start it again.
    fn on_crash(&mut self, message: String) {
        // (`backend` is already cleared when a panic came before the device-lost report)
        let on_gpu = self.backend.as_deref() == Some("webgpu") || self.ran_on_gpu;
        self.error = Some(format!(
            "The model stopped working ({message}). Your prompt, settings, picture and mask are \
             kept: Retry starts it again{}.",
            if on_gpu { ", or Retry on the CPU if the GPU failed" } else { "" }
        ));
        self.restartable = true;
        self.backend = None;
        self.status = Status::Loading {
            loaded: 0,
            total: 0,
        };
        if self.editor.running.take().is_some() {
            set_edit_state("error");
        }
        if let Some(body) = window().document().and_then(|d| d.body()) {
            let _ = body.set_attribute("data-error", "1");
        }
    }

    /// A new worker in place of the old one; it loads the model when it says it has started.
    fn restart(&mut self, link: &html::Scope<App>, cpu: bool) {
        self.worker.terminate();
        let (worker, callbacks) = spawn_worker(link);
        self.worker = worker;
        self.callbacks = callbacks;
        self.worker_started = false;
        if cpu {
            self.backend_choice = BackendChoice::Cpu;
        }
        if let ToWorker::Load { backend, .. } = &mut self.load {
            *backend = self.backend_choice;
        }
        self.error = None;
        self.restartable = false;
        self.status = Status::Loading {
            loaded: 0,
            total: 0,
        };
        if let Some(body) = window().document().and_then(|d| d.body()) {
            let _ = body.remove_attribute("data-error");
        }
    }

    fn retry_buttons(&self, link: &html::Scope<App>) -> Html {
        if !self.restartable {
            return html! {};
        }
        html! {
            <div class="row">
                <button id="retry" onclick={link.callback(|_| Msg::Restart { cpu: false })}>{ "Retry" }</button>
                if self.backend_choice != BackendChoice::Cpu {
                    <button id="retry-cpu" onclick={link.callback(|_| Msg::Restart { cpu: true })}>{ "Retry on the CPU" }</button>
                }
            </div>
        }
    }
}
