// latchkey console: the copy buttons. Everything else works without script;
// htmx (htmx.min.js) swaps search results and pages in place.
(function () {
  "use strict";
  function copied(button, ok) {
    var status = document.getElementById(button.getAttribute("aria-describedby"));
    if (status) {
      status.textContent = ok ? "Copied to the clipboard." : "Select the text and copy it (Ctrl+C or Cmd+C).";
    }
    if (ok) {
      button.textContent = "Copied";
      window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
    }
  }
  document.addEventListener("click", function (ev) {
    var button = ev.target.closest ? ev.target.closest("[data-copy]") : null;
    if (!button) { return; }
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) { return; }
    input.focus();
    input.select();
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(input.value).then(
        function () { copied(button, true); },
        function () { copied(button, document.execCommand && document.execCommand("copy")); }
      );
    } else {
      copied(button, document.execCommand && document.execCommand("copy"));
    }
  });
  document.addEventListener("focusin", function (ev) {
    if (ev.target && ev.target.hasAttribute && ev.target.hasAttribute("data-secret")) {
      ev.target.select();
    }
  });
})();
