(function () {
  "use strict";
  // The scoring queue's keys (grader/review/queue.py); allowed by its hash in the app's CSP.
  var form = document.getElementById("queue-form");
  if (!form) { return; }
  var points = document.getElementById("points");
  var comment = document.getElementById("comment");
  var items = Array.prototype.slice.call(document.querySelectorAll(".rubric-item"));

  function pick(item) {
    points.value = item.getAttribute("data-points");
    points.removeAttribute("aria-invalid");
    var stock = item.getAttribute("data-comment");
    if (stock && comment.value.indexOf(stock) < 0) {
      var kept = comment.value.replace(/\s+$/, "");
      comment.value = kept ? kept + "\n" + stock : stock;
    }
    items.forEach(function (other) { other.setAttribute("aria-pressed", other === item ? "true" : "false"); });
  }

  items.forEach(function (item) {
    item.addEventListener("click", function () { pick(item); points.focus(); });
  });

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target === comment) {
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    // Typing a comment or a name: every key is text. Elsewhere (the points box included) 1…9 pick.
    var typing = target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target !== points) ||
      target.isContentEditable;
    if (typing || event.ctrlKey || event.metaKey || event.altKey || !/^[0-9]$/.test(event.key)) { return; }
    if (target !== points && event.key === "0") { return; }
    event.preventDefault();  // in the points box a digit never types: it picks (↑/↓ adjust by one)
    var item = items[Number(event.key) - 1];
    if (item) {
      pick(item);
      if (target !== points) { points.focus(); }
    }
  });
}());
