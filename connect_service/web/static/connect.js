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

  function showErrors(form, fieldErrors, formErrorText) {
    var first = null;
    Object.keys(fieldErrors || {}).forEach(function (name) {
      var box = fieldBox(form, name);
      if (!box) { formErrorText = formErrorText || fieldErrors[name]; return; }
      box.classList.add("has-error");
      var input = box.querySelector("input, select, textarea");
      if (input) { input.setAttribute("aria-invalid", "true"); first = first || input; }
      var msg = box.querySelector(".field-error");
      if (msg) { msg.textContent = fieldErrors[name]; msg.hidden = false; }
    });
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
      return response.json().then(function (data) { return { ok: response.ok, data: data }; });
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
        showErrors(form, data.field_errors, data.form_error ||
                   (data.error && data.error.details && data.error.details.input) ||
                   "Saving failed. Check the form and try again.");
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
