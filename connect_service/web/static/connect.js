/* Progressive enhancement for the hosted connect page: save a credentials form in place.
   Without this script every form still posts and the server renders the page again. */
(function () {
  "use strict";

  function fieldBox(form, name) {
    var boxes = form.querySelectorAll(".field[data-field]");
    for (var i = 0; i < boxes.length; i++) {
      if (boxes[i].getAttribute("data-field") === name) return boxes[i];
    }
    return null;
  }

  function clearErrors(form) {
    var boxes = form.querySelectorAll(".field[data-field]");
    for (var i = 0; i < boxes.length; i++) {
      var box = boxes[i];
      box.classList.remove("has-error");
      var input = box.querySelector("input, select, textarea");
      if (input) input.removeAttribute("aria-invalid");
      var msg = box.querySelector(".field-error");
      if (msg) { msg.textContent = ""; msg.hidden = true; }
    }
    var formError = form.querySelector(".form-error");
    if (formError) { formError.textContent = ""; formError.hidden = true; }
  }

  /* The service's error shape: {"error": {"code", "message", "details": {"config.<field>" | "input": text}}}.
     A detail naming a field of this form goes next to it; every other one is the form's error. */
  function showErrors(form, details, fallback) {
    var first = null;
    var formErrorText = "";
    Object.keys(details || {}).forEach(function (path) {
      var box = path.indexOf("config.") === 0 ? fieldBox(form, path.slice(7).split(".")[0]) : null;
      if (!box) { formErrorText = formErrorText || details[path]; return; }
      box.classList.add("has-error");
      var input = box.querySelector("input, select, textarea");
      if (input) { input.setAttribute("aria-invalid", "true"); first = first || input; }
      var msg = box.querySelector(".field-error");
      if (msg) { msg.textContent = details[path]; msg.hidden = false; }
    });
    if (!first && !formErrorText) formErrorText = fallback;
    var formError = form.querySelector(".form-error");
    if (formErrorText && formError) { formError.textContent = formErrorText; formError.hidden = false; }
    if (first) first.focus();
    else if (formErrorText && formError) { formError.setAttribute("tabindex", "-1"); formError.focus(); }
  }

  function setNotice(card, text) {
    var notice = card.querySelector(".notice");
    if (!notice) {
      notice = document.createElement("p");
      var head = card.querySelector(".desc") || card.querySelector(".card-head");
      head.insertAdjacentElement("afterend", notice);
    }
    notice.className = "notice notice-ok";
    notice.setAttribute("role", "status");
    notice.textContent = text;
  }

  function onSubmit(event) {
    var form = event.currentTarget;
    if (!window.fetch || !window.FormData || !window.URLSearchParams) return;  // plain post instead
    event.preventDefault();
    if (form.getAttribute("aria-busy") === "true") return;
    var card = form.closest("[data-requirement]");
    var button = form.querySelector("button[type=submit]");
    var progress = form.querySelector(".progress");
    form.setAttribute("aria-busy", "true");
    button.disabled = true;
    progress.textContent = "Saving\u2026";
    progress.classList.add("busy");
    clearErrors(form);

    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Accept": "application/json" },
      body: new URLSearchParams(new FormData(form))
    }).then(function (response) {
      // a body that is not JSON (a proxy's error page) still ends in a message on the form
      return response.json().catch(function () { return {}; }).then(function (data) {
        return { ok: response.ok, data: data };
      });
    }).then(function (result) {
      var data = result.data || {};
      if (result.ok) {
        var badge = card.querySelector("[data-badge]");
        badge.textContent = data.badge;
        badge.className = "badge badge-" + data.status;
        var secrets = form.querySelectorAll("input[type=password]");
        for (var i = 0; i < secrets.length; i++) secrets[i].value = "";
        setNotice(card, data.message || "Saved.");
      } else {
        showErrors(form, data.error && data.error.details,
                   "Saving failed (" + ((data.error && data.error.message) || "error") + "). Try again.");
      }
    }).catch(function () {
      showErrors(form, {}, "The service could not be reached. Check your connection and try again.");
    }).then(function () {
      form.removeAttribute("aria-busy");
      button.disabled = false;
      progress.textContent = "";
      progress.classList.remove("busy");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var forms = document.querySelectorAll("form.cred-form");
    for (var i = 0; i < forms.length; i++) forms[i].addEventListener("submit", onSubmit);
    // Plain posts (action accounts) and the OAuth link: show that something is happening.
    var others = document.querySelectorAll("form.link-form");
    for (var j = 0; j < others.length; j++) {
      others[j].addEventListener("submit", function (event) {
        var button = event.currentTarget.querySelector("button[type=submit]");
        event.currentTarget.setAttribute("aria-busy", "true");
        window.setTimeout(function () { button.disabled = true; }, 0);
      });
    }
  });
})();
