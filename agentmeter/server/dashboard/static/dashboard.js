// agentmeter dashboard: the only script. Pages work without it; it only submits
// the time-range form as soon as a choice changes.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form.picker select").forEach(function (el) {
    el.addEventListener("change", function () {
      if (el.name === "range") {
        // a preset replaces explicit dates
        el.form.querySelectorAll("input[type=date]").forEach(function (d) { d.value = ""; });
      }
      el.form.submit();
    });
  });
});
