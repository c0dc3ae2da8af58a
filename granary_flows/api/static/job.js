// A job's page reloads itself while the job is accepted or running.
"use strict";
const status = document.getElementById("status");
if (status && status.dataset.refresh === "1") {
  setTimeout(() => window.location.reload(), 1500);
}
