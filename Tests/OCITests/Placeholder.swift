// OCITests
